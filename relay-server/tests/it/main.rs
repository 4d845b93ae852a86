//! Black-box tests of the relay: a real server on 127.0.0.1:0 (in-process, short timeouts
//! where a test waits for one) and a small client made of the shared codec, tokio-rustls and
//! throwaway device certificates, over real TCP and TLS; the built binary; and stock Syncthing
//! devices connecting through the relay (`syncthing.rs`, needs Debian's `syncthing`).

mod binary;
mod limits;
mod protocol;
mod sessions;
mod status;
mod stun;
mod support;
mod syncthing;
