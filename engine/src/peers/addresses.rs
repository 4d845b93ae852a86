//! Where a device can be reached. The dialer asks every source it has; the configuration is
//! the first one, and global discovery, mDNS and relays will be others.

use std::sync::Arc;

use peerfold_protocol::DeviceId;

use crate::config::Address;
use crate::config::live::LiveConfig;

/// A place the dialer learns addresses from.
#[async_trait::async_trait]
pub(crate) trait AddressSource: Send + Sync {
    /// Addresses `device` may be reached at now (none when this source knows nothing).
    async fn addresses(&self, device: DeviceId) -> Vec<Address>;
}

/// The addresses written in the configuration (`dynamic` stands for the other sources).
pub(crate) struct ConfiguredAddresses(pub(crate) Arc<LiveConfig>);

#[async_trait::async_trait]
impl AddressSource for ConfiguredAddresses {
    async fn addresses(&self, device: DeviceId) -> Vec<Address> {
        self.0
            .get()
            .devices
            .iter()
            .find(|d| d.id == device)
            .map(|d| {
                d.addresses
                    .iter()
                    .filter(|a| **a != Address::Dynamic)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
