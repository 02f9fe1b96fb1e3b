//! ZeroMQ endpoints, checked before any socket sees them.

use std::fmt;
use std::str::FromStr;

/// Why an endpoint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0:?} has no transport; write it like tcp://127.0.0.1:5570")]
    NoTransport(String),
    #[error("endpoint {0:?} uses an unsupported transport; use tcp://, ipc:// or inproc://")]
    Transport(String),
    #[error("endpoint {0:?} has no port; write it like tcp://127.0.0.1:5570")]
    NoPort(String),
    #[error("endpoint {0:?} has port {1:?}; a port is a number from 1 to 65535")]
    BadPort(String, String),
    #[error("endpoint {0:?} has no host; use tcp://*:PORT to bind every interface")]
    NoHost(String),
    #[error("endpoint {0:?} has no path")]
    NoPath(String),
}

/// A validated ZeroMQ endpoint such as `tcp://127.0.0.1:5570`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    text: String,
}

impl Endpoint {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host of a tcp endpoint (`*` for all interfaces), `None` otherwise.
    pub fn tcp_host(&self) -> Option<&str> {
        let rest = self.text.strip_prefix("tcp://")?;
        let (host, _) = rest.rsplit_once(':')?;
        Some(host.trim_start_matches('[').trim_end_matches(']'))
    }

    /// True when traffic on this endpoint cannot leave the machine.
    pub fn is_local(&self) -> bool {
        match self.tcp_host() {
            None => true, // ipc:// and inproc://
            Some(host) => host == "localhost" || host == "::1" || host.starts_with("127."),
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let owned = || text.to_owned();
        let (transport, rest) = text.split_once("://").ok_or_else(|| EndpointError::NoTransport(owned()))?;
        match transport {
            "tcp" => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(|| EndpointError::NoPort(owned()))?;
                if host.is_empty() {
                    return Err(EndpointError::NoHost(owned()));
                }
                match port.parse::<u16>() {
                    Ok(p) if p > 0 => {}
                    _ => return Err(EndpointError::BadPort(owned(), port.to_owned())),
                }
            }
            "ipc" | "inproc" => {
                if rest.is_empty() {
                    return Err(EndpointError::NoPath(owned()));
                }
            }
            _ => return Err(EndpointError::Transport(owned())),
        }
        Ok(Endpoint { text: owned() })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert!("tcp://127.0.0.1:5570".parse::<Endpoint>().is_ok());
        assert!("tcp://*:5570".parse::<Endpoint>().is_ok());
        assert!("ipc:///tmp/x".parse::<Endpoint>().is_ok());
        assert_eq!("localhost:5570".parse::<Endpoint>(), Err(EndpointError::NoTransport("localhost:5570".into())));
        assert!(matches!("tcp://host:0".parse::<Endpoint>(), Err(EndpointError::BadPort(..))));
        assert!(matches!("tcp://host:99999".parse::<Endpoint>(), Err(EndpointError::BadPort(..))));
        assert!(matches!("tcp://host".parse::<Endpoint>(), Err(EndpointError::NoPort(..))));
        assert!(matches!("udp://h:1".parse::<Endpoint>(), Err(EndpointError::Transport(..))));
    }

    #[test]
    fn locality() {
        assert!("tcp://127.0.0.1:1".parse::<Endpoint>().unwrap().is_local());
        assert!(!"tcp://*:1".parse::<Endpoint>().unwrap().is_local());
        assert!(!"tcp://198.18.0.2:1".parse::<Endpoint>().unwrap().is_local());
    }
}
