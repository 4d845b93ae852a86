//! Black-box tests of the discovery server: a real server on 127.0.0.1:0 (in-process, with a
//! manual clock) and a real HTTPS client. The behaviour suite runs once per store; the Redis
//! runs start their own `redis-server` (Debian package `redis-server`) and fail, never skip,
//! when it is missing.

mod binary;
mod limits;
mod proxy;
mod stores;
mod stun;
mod suite;
mod support;
