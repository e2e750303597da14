//! Plain-HTTP forward proxying for ureq.
//!
//! ureq talks to every HTTP proxy through a `CONNECT` tunnel. A caching proxy such as
//! apt-cacher-ng cannot cache what it only tunnels (and refuses `CONNECT` to port 80 by
//! default), so `http://` URLs are sent to the proxy the classic way instead: a TCP
//! connection to the proxy and the request target in absolute form,
//! `GET http://host/path HTTP/1.1` (RFC 9112 §3.2.2). Two small parts do it: a resolver
//! that answers every name with the proxy's address, and a transport that rewrites the
//! request line of each connection's (only) request. Connections are not pooled, so every
//! connection carries exactly one request.
//!
//! This uses ureq's `unversioned` transport API; a ureq upgrade may need to adapt it.

use std::net::{SocketAddr, ToSocketAddrs};

use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, NextTimeout, TcpConnector, Transport,
};

/// An agent that sends every request through the HTTP proxy `proxy`
/// (`http://host:port`, port 80 by default).
pub(super) fn agent(
    config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    proxy: &str,
) -> Result<ureq::Agent, String> {
    let addrs = proxy_addrs(proxy)?;
    let config = config.max_idle_connections(0).proxy(None).build();
    let connector = ().chain(TcpConnector::default()).chain(AbsoluteForm);
    Ok(ureq::Agent::with_parts(
        config,
        connector,
        ProxyResolver { addrs },
    ))
}

/// The proxy's socket addresses (resolved once).
fn proxy_addrs(proxy: &str) -> Result<Vec<SocketAddr>, String> {
    let rest = match proxy.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => return Err(format!("unsupported proxy scheme `{scheme}`")),
        None => proxy,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    if authority.is_empty() {
        return Err("no host".into());
    }
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_owned()
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{with_port}`: {e}"))?
        .take(16)
        .collect();
    if addrs.is_empty() {
        return Err(format!("`{with_port}` has no address"));
    }
    Ok(addrs)
}

#[derive(Debug)]
struct ProxyResolver {
    addrs: Vec<SocketAddr>,
}

impl Resolver for ProxyResolver {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // `empty()` has length 0; `proxy_addrs` keeps at most 16 (the capacity).
        let mut out = self.empty();
        for addr in &self.addrs {
            if out.try_push(*addr).is_err() {
                break;
            }
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct AbsoluteForm;

impl<In: Transport> Connector<In> for AbsoluteForm {
    type Out = AbsoluteFormTransport<In>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let origin = match (details.uri.scheme_str(), details.uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => String::new(),
        };
        Ok(chained.map(|inner| AbsoluteFormTransport {
            inner,
            origin,
            first: true,
        }))
    }
}

#[derive(Debug)]
struct AbsoluteFormTransport<T> {
    inner: T,
    /// `http://host[:port]`, put in front of the origin-form target.
    origin: String,
    first: bool,
}

/// `GET /path HTTP/1.1\r\n…` -> `GET http://host/path HTTP/1.1\r\n…` (pure).
pub(super) fn absolute_request(head: &[u8], origin: &str) -> Option<Vec<u8>> {
    let space = head.iter().position(|b| *b == b' ')?;
    if head.get(space + 1) != Some(&b'/') {
        return None;
    }
    let mut out = Vec::with_capacity(head.len() + origin.len());
    out.extend_from_slice(&head[..=space]);
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(&head[space + 1..]);
    Some(out)
}

impl<T: Transport> Transport for AbsoluteFormTransport<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if std::mem::take(&mut self.first) && !self.origin.is_empty() {
            let output = self.inner.buffers().output();
            if let Some(rewritten) = absolute_request(&output[..amount], &self.origin)
                && rewritten.len() <= output.len()
            {
                output[..rewritten.len()].copy_from_slice(&rewritten);
                return self.inner.transmit_output(rewritten.len(), timeout);
            }
        }
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_becomes_absolute() {
        let head = b"GET /debian/dists/trixie/InRelease HTTP/1.1\r\nHost: deb.debian.org\r\n\r\n";
        let out = absolute_request(head, "http://deb.debian.org").expect("origin form");
        assert!(
            out.starts_with(
                b"GET http://deb.debian.org/debian/dists/trixie/InRelease HTTP/1.1\r\n"
            )
        );
        assert!(absolute_request(b"CONNECT a:80 HTTP/1.1\r\n", "http://a").is_none());
        assert!(absolute_request(b"garbage", "http://a").is_none());
    }

    #[test]
    fn proxy_addresses() {
        assert_eq!(
            proxy_addrs("http://127.0.0.1:3142").expect("valid"),
            ["127.0.0.1:3142".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(
            proxy_addrs("user:pw@127.0.0.1").expect("valid")[0].port(),
            80
        );
        assert!(proxy_addrs("socks5://127.0.0.1:1080").is_err());
        assert!(proxy_addrs("http://").is_err());
    }
}
