//! The client's address: the TCP peer, unless the peer is one of `server.trusted_proxies`.
//! Then it is the right-most address of `server.client_ip_header` that is not itself a trusted
//! proxy: each proxy appends the address it was connected from, so everything left of that
//! entry was written by the client (or by proxies nobody vouched for) and is never believed.
//! A hop that cannot be read (`unknown`, an obfuscated name, garbage) ends the walk at the
//! nearest trusted proxy. With no trusted proxies, forwarding headers are ignored entirely.
//!
//! [`Resolve`] works the address out once per request, stores it as [`ClientAddr`] in the
//! request's extensions (where the login limiter's handler reads it) and records it as the
//! `client` field of the request's log span.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request};
use ipnet::IpNet;
use tower::{Layer, Service};

use super::error::ApiError;
use crate::config::{ClientIpHeader, ServerSettings};

/// Hops of a forwarding header read from the right; more proxies than this in a row is not
/// a deployment but a header stuffed to make the walk long.
pub const MAX_HOPS: usize = 32;

/// The proxies whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    networks: Arc<[IpNet]>,
    header: ClientIpHeader,
}

impl TrustedProxies {
    /// From `server.trusted_proxies` (validated at load; were an entry not to parse, it would be
    /// left out, trusting less rather than more) and `server.client_ip_header`.
    pub fn from_settings(server: &ServerSettings) -> Self {
        Self::new(server.trusted_proxy_networks().unwrap_or_default(), server.client_ip_header)
    }

    /// Trusts `networks`' forwarding `header`.
    pub fn new(networks: Vec<IpNet>, header: ClientIpHeader) -> Self {
        Self { networks: networks.into(), header }
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops = match self.header {
            ClientIpHeader::XForwardedFor => header_entries(headers, "x-forwarded-for", parse_address),
            ClientIpHeader::Forwarded => header_entries(headers, "forwarded", forwarded_for),
        };
        let mut nearest = peer;
        for hop in hops.into_iter().rev().take(MAX_HOPS) {
            match hop {
                Some(address) if self.trusts(address) => nearest = address,
                Some(address) => return address,
                None => return nearest,
            }
        }
        nearest
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(&address))
    }
}

/// The comma-separated entries of every `name` header, in order, each read by `parse`
/// (`None`: unreadable). A header that is not ASCII is one unreadable entry.
fn header_entries(headers: &HeaderMap, name: &str, parse: fn(&str) -> Option<IpAddr>) -> Vec<Option<IpAddr>> {
    let mut entries = Vec::new();
    for value in headers.get_all(name) {
        match value.to_str() {
            Ok(text) => entries.extend(text.split(',').map(str::trim).filter(|e| !e.is_empty()).map(parse)),
            Err(_) => entries.push(None),
        }
    }
    entries
}

/// One `Forwarded` element (`for=192.0.2.60;proto=https;by=...`): its `for` address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| parse_address(value)).flatten()
    })
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711`,
/// `[2001:db8::1]`, `"[2001:db8::1]:4711"`.
fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    let address = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>())
        .ok()?;
    Some(address.to_canonical())
}

/// The client's address, as [`Resolve`] worked it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(client) = parts.extensions.get::<ClientAddr>() {
            return Ok(*client);
        }
        // outside the router's middleware (a handler driven on its own): the peer
        match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => Ok(Self(peer.ip().to_canonical())),
            None => Err(ApiError::Internal("the client address is unknown (no connect info)".to_owned())),
        }
    }
}

/// Resolves the client's address once per request (see the module docs), in front of a service.
#[derive(Debug, Clone)]
pub struct ResolveLayer {
    proxies: TrustedProxies,
}

impl ResolveLayer {
    /// The layer that believes `proxies`.
    pub fn new(proxies: TrustedProxies) -> Self {
        Self { proxies }
    }
}

impl<S> Layer<S> for ResolveLayer {
    type Service = Resolve<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Resolve { inner, proxies: self.proxies.clone() }
    }
}

/// The service [`ResolveLayer`] makes: the work is done before the inner service is called,
/// so its future is the inner service's own.
#[derive(Debug, Clone)]
pub struct Resolve<S> {
    inner: S,
    proxies: TrustedProxies,
}

impl<S, B> Service<Request<B>> for Resolve<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
        if let Some(peer) = peer {
            let client = self.proxies.client(peer, req.headers());
            tracing::Span::current().record("client", tracing::field::display(client));
            req.extensions_mut().insert(ClientAddr(client));
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests;
