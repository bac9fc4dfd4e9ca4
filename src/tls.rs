//! TLS: the certificate resolver that picks a certificate by SNI and can be swapped on reload.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Certificate;

/// The certificates of one listener, in configuration order.
#[derive(Clone)]
struct CertificateSet {
    /// (names, key) of each certificate; the first is the default.
    entries: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl CertificateSet {
    fn from_config(certificates: &[Certificate]) -> Self {
        CertificateSet {
            entries: certificates
                .iter()
                .map(|c| (c.names.clone(), c.key.clone()))
                .collect(),
        }
    }

    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = name.trim_end_matches('.');
            for (names, key) in &self.entries {
                if names.iter().any(|pattern| name_matches(pattern, name)) {
                    return Some(key.clone());
                }
            }
        }
        self.entries.first().map(|(_, key)| key.clone())
    }
}

/// Whether a certificate name (possibly `*.example.org`) covers a server name. rustls gives
/// the SNI lowercased already.
fn name_matches(pattern: &str, name: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        // A wildcard covers exactly one label.
        match name.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
            None => false,
        }
    } else {
        pattern.eq_ignore_ascii_case(name)
    }
}

/// Chooses a listener's certificate by SNI; the first configured certificate answers clients
/// that send no name or an unknown one. Reload swaps the set for new handshakes.
pub struct SniResolver {
    current: ArcSwap<CertificateSet>,
}

impl SniResolver {
    pub fn new(certificates: &[Certificate]) -> Self {
        SniResolver {
            current: ArcSwap::from_pointee(CertificateSet::from_config(certificates)),
        }
    }

    /// Use these certificates for handshakes from now on.
    pub fn replace(&self, certificates: &[Certificate]) {
        self.current
            .store(Arc::new(CertificateSet::from_config(certificates)));
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.current.load();
        f.debug_struct("SniResolver")
            .field(
                "names",
                &set.entries.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().pick(client_hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_covers_one_label() {
        assert!(name_matches("*.ent.example.test", "app.ent.example.test"));
        assert!(!name_matches("*.ent.example.test", "ent.example.test"));
        assert!(!name_matches("*.ent.example.test", "a.b.ent.example.test"));
        assert!(name_matches("localhost", "LOCALHOST"));
        assert!(!name_matches("localhost", "localhost2"));
    }
}
