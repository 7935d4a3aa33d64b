//! `--bus URL` to a connected bus.

use std::sync::Arc;

use psrpc::Bus;

use crate::{BusArgs, Fail};

/// Connects to the bus at `args.bus`, within the connect timeout.
pub(crate) async fn connect(args: &BusArgs) -> Result<Arc<dyn Bus>, Fail> {
    let url = args.bus.as_str();
    // An in-process bus of its own would show this process nothing.
    if psrpc_connect::scheme(url) == "local" {
        return Err(format!(
            "bus URL {url:?} is an in-process bus, which no other process shares: use a broker's URL"
        ));
    }
    match tokio::time::timeout(args.connect_timeout, psrpc_connect::connect(url)).await {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(_) => Err(format!(
            "cannot connect to {url}: no answer within {:?}",
            args.connect_timeout
        )),
    }
}
