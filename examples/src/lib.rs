//! Shared pieces of the psrpc examples: choosing the bus from the command line.

use psrpc::bus::{Bus, LocalBus};
use std::sync::Arc;

/// The bus named by `--bus URL` on the command line, or an in-process bus without it.
///
/// # Errors
/// A message for an unknown scheme or a bus that cannot connect.
pub async fn bus_from_args() -> Result<Arc<dyn Bus>, String> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .iter()
        .position(|a| a == "--bus")
        .and_then(|i| args.get(i + 1))
        .cloned();
    match url {
        None => Ok(Arc::new(LocalBus::new())),
        Some(url) => Err(format!(
            "unsupported bus URL {url:?}: only the in-process bus is built in yet"
        )),
    }
}
