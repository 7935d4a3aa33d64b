//! `mqtt://[user[:password]@]host[:port]` and `mqtts://…` URLs.

use crate::MqttBusError;

/// A parsed broker URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BrokerUrl {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) credentials: Option<(String, String)>,
}

impl BrokerUrl {
    /// Parses `url`: schemes `mqtt`/`tcp` (default port 1883) and `mqtts`/`ssl` (8883);
    /// user and password are percent-decoded; a trailing `/` is allowed, any other path is not.
    pub(crate) fn parse(url: &str) -> Result<Self, MqttBusError> {
        let bad = |why: &str| MqttBusError::InvalidUrl(format!("{why}: {url:?}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            _ => return Err(bad("scheme must be mqtt:// or mqtts://")),
        };
        let authority = match rest.split_once('/') {
            Some((authority, "")) => authority,
            Some(_) => return Err(bad("a path is not allowed")),
            None => rest,
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let credentials = match userinfo {
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                Some((
                    percent_decode(user).ok_or_else(|| bad("bad percent escape"))?,
                    percent_decode(pass).ok_or_else(|| bad("bad percent escape"))?,
                ))
            }
            None => None,
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
                ),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| bad("bad port"))?,
            None => default_port,
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
            credentials,
        })
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_credentials() {
        let url = BrokerUrl::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!(
            url,
            BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1884,
                credentials: None
            }
        );
        let url = BrokerUrl::parse("mqtts://al%40ice:p%3Ass@broker.example/").unwrap();
        assert!(url.tls);
        assert_eq!(url.port, 8883);
        assert_eq!(url.host, "broker.example");
        assert_eq!(url.credentials, Some(("al@ice".into(), "p:ss".into())));
        let url = BrokerUrl::parse("mqtt://[::1]:1999").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 1999));
        assert_eq!(BrokerUrl::parse("mqtt://h").unwrap().port, 1883);
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "127.0.0.1:1883",
            "http://h:1",
            "mqtt://:1883",
            "mqtt://h:x",
            "mqtt://h/path",
            "mqtt://u:%zz@h",
            "mqtt://[::1",
        ] {
            assert!(BrokerUrl::parse(url).is_err(), "{url}");
        }
    }
}
