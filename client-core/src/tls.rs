//! How a device reaches its server safely: the server's address checked, TLS with rustls, and
//! whom the device trusts.
//!
//! An [`Endpoint`] is a checked server address (`https://` or `http://`) with the TLS client
//! configuration every connection to it uses: the HTTP transport and the live channel alike.
//! rustls with the `ring` provider (no OpenSSL, no C toolchain beyond `cc`, so the same code
//! builds for Android and iOS). The device trusts either the Mozilla roots compiled in
//! (webpki-roots: the same everywhere, phones included) or, when it is given a trust's own CA
//! ([`ServerOptions::ca_pem`]), only that CA, as `curl --cacert` does.
//!
//! Plain `http://` carries the device's token and case notes unencrypted, so an endpoint refuses
//! it for anything but this machine's loopback (127.0.0.0/8, ::1, `localhost`) unless told
//! explicitly ([`ServerOptions::allow_insecure_http`]); the refusal comes before any connection.

use crate::error::Error;
use casenote_protocol::limits;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// How a device is to trust its server, as `login` is given it and the store keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// PEM certificates of the CA to trust instead of the built-in roots (a trust's internal CA).
    pub ca_pem: Option<Vec<u8>>,
    /// Plain `http://` to an address that is not loopback, which sends the token and case notes
    /// unencrypted: only on a network the organisation trusts.
    pub allow_insecure_http: bool,
}

/// A checked server address and the TLS configuration to reach it with.
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    options: ServerOptions,
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("ca", &self.options.ca_pem.is_some())
            .field("allow_insecure_http", &self.options.allow_insecure_http)
            .finish()
    }
}

impl Endpoint {
    /// The server at `url` under `options`: [`Error::BadServerUrl`] for a malformed address,
    /// [`Error::InsecureHttp`] for plain http to a non-loopback host not explicitly allowed,
    /// [`Error::BadCa`] for a CA that is not usable PEM. Nothing is sent anywhere.
    pub fn new(url: &str, options: ServerOptions) -> Result<Self, Error> {
        check_server_url(url)?;
        if let Some(host) = insecure_host(url) {
            if !options.allow_insecure_http {
                return Err(Error::InsecureHttp { host });
            }
        }
        let tls = match &options.ca_pem {
            Some(pem) => Arc::new(client_config(ca_roots(pem)?)),
            None => default_config(),
        };
        Ok(Endpoint {
            url: url.trim_end_matches('/').to_string(),
            options,
            tls,
        })
    }

    /// `url` as it is, trusting the built-in roots, with no check at all: for callers that
    /// chose their address themselves (tests, benchmarks). A malformed address fails every
    /// request as unreachable.
    pub fn unchecked(url: &str) -> Self {
        Endpoint {
            url: url.trim_end_matches('/').to_string(),
            options: ServerOptions::default(),
            tls: default_config(),
        }
    }

    /// The server's address, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the device was told to trust.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The TLS client configuration for `https://` (and `wss://`) to this server.
    pub fn tls_config(&self) -> Arc<ClientConfig> {
        self.tls.clone()
    }
}

/// Checks that `server` is an address the device can talk to: `https://HOST[:PORT][/PATH]` or
/// `http://...`. Anything else (no scheme, another scheme, no host, spaces) is
/// [`Error::BadServerUrl`], before any request is tried. Whether plain http is allowed is
/// [`Endpoint::new`]'s to decide.
pub fn check_server_url(server: &str) -> Result<(), Error> {
    let bad = || Error::BadServerUrl {
        given: server.to_string(),
        hint: if server.contains("://") || server.trim().is_empty() {
            "https://HOST[:PORT] (or http://127.0.0.1:PORT on this machine)".into()
        } else {
            // On this machine the server is most likely plain http; elsewhere, https.
            let plain = format!("http://{}", server.trim());
            match insecure_host(&plain) {
                None => plain,
                Some(_) => format!("https://{}", server.trim()),
            }
        },
    };
    let rest = split_scheme(server).ok_or_else(bad)?.1;
    let name = host_of(rest);
    if name.is_empty() || server.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    Ok(())
}

/// `(is_https, the rest after the scheme)`, for `https://` and `http://` only.
fn split_scheme(url: &str) -> Option<(bool, &str)> {
    if let Some(rest) = url.strip_prefix("https://") {
        Some((true, rest))
    } else {
        url.strip_prefix("http://").map(|rest| (false, rest))
    }
}

/// The host of `authority[/path]` (no port, no brackets); empty if the port is not a number.
pub(crate) fn host_of(rest: &str) -> &str {
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((name, port)) if !authority.ends_with(']') => {
            if port.parse::<u16>().is_ok() {
                name
            } else {
                ""
            }
        }
        _ => authority,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The host of a plain `http://` URL that is not this machine's loopback; `None` for
/// `https://` and for loopback.
fn insecure_host(url: &str) -> Option<String> {
    let (https, rest) = split_scheme(url)?;
    if https {
        return None;
    }
    let host = host_of(rest);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    (!loopback).then(|| host.to_string())
}

/// The CA certificates in `pem` as the only roots to trust. At most
/// `limits::DEVICE_CA_PEM_BYTES_MAX` bytes; at least one certificate; each usable as a root.
pub fn ca_roots(pem: &[u8]) -> Result<RootCertStore, Error> {
    if pem.len() > limits::DEVICE_CA_PEM_BYTES_MAX {
        return Err(Error::BadCa(format!(
            "it is {} bytes, over the {} a CA file may take",
            pem.len(),
            limits::DEVICE_CA_PEM_BYTES_MAX
        )));
    }
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::BadCa(format!("it is not valid PEM ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| Error::BadCa(format!("a certificate in it cannot be a CA ({e})")))?;
    }
    if roots.is_empty() {
        return Err(Error::BadCa(
            "it holds no certificate (a PEM block `-----BEGIN CERTIFICATE-----`)".into(),
        ));
    }
    Ok(roots)
}

/// A client configuration trusting `roots`, on the `ring` provider.
fn client_config(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The configuration trusting the built-in Mozilla roots, made once.
fn default_config() -> Arc<ClientConfig> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Arc::new(client_config(roots))
        })
        .clone()
}

/// A TLS failure in `err`'s chain (a certificate the device does not trust, a name that does not
/// match, a handshake the server refused), in rustls' words; `None` if it is not one.
pub(crate) fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        // io::Error's `source` skips the error it wraps: look inside it.
        if let Some(t) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t.to_string());
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_and_http_addresses_with_a_host_are_server_addresses() {
        for good in [
            "http://127.0.0.1:8080",
            "https://casenote.example/",
            "https://casenote.example:8443",
            "http://[::1]:8080",
            "http://[::1]",
            "http://host/prefix",
        ] {
            assert!(check_server_url(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1:8080",
            "ftp://casenote.example",
            "http://",
            "https://",
            "http://:8080",
            "http://host:port",
            "http://host name",
            "",
        ] {
            assert!(
                matches!(check_server_url(bad), Err(Error::BadServerUrl { .. })),
                "{bad}"
            );
        }
        let hint = check_server_url("casenote.example")
            .unwrap_err()
            .to_string();
        assert!(hint.contains("https://casenote.example"), "{hint}");
        let hint = check_server_url("127.0.0.1:8080").unwrap_err().to_string();
        assert!(hint.contains("http://127.0.0.1:8080"), "{hint}");
    }

    #[test]
    fn plain_http_is_refused_for_anything_but_loopback_unless_allowed() {
        for loopback in [
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://localhost:8080/",
            "http://LOCALHOST",
            "http://[::1]:8080",
            "http://[::ffff:127.0.0.1]:8080",
        ] {
            assert!(
                Endpoint::new(loopback, ServerOptions::default()).is_ok(),
                "{loopback}"
            );
        }
        for remote in [
            "http://10.255.255.1:9",
            "http://casenote.example",
            "http://[fd00::2]:8080",
            "http://localhost.example.org",
            "http://128.0.0.1",
        ] {
            let refused = Endpoint::new(remote, ServerOptions::default()).unwrap_err();
            assert!(matches!(refused, Error::InsecureHttp { .. }), "{remote}");
            let allowed = ServerOptions {
                allow_insecure_http: true,
                ..ServerOptions::default()
            };
            assert!(Endpoint::new(remote, allowed).is_ok(), "{remote}");
        }
        assert!(Endpoint::new("https://casenote.example", ServerOptions::default()).is_ok());
    }

    #[test]
    fn a_ca_that_is_empty_not_pem_or_not_a_certificate_is_refused() {
        let no_cert =
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let broken =
            b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let huge = vec![b'a'; limits::DEVICE_CA_PEM_BYTES_MAX + 1];
        for pem in [&b""[..], b"hello", no_cert, broken, garbage, &huge] {
            let options = ServerOptions {
                ca_pem: Some(pem.to_vec()),
                ..ServerOptions::default()
            };
            let err = Endpoint::new("https://casenote.example", options).unwrap_err();
            assert!(matches!(err, Error::BadCa(_)), "{err}");
        }
    }
}
