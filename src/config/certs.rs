//! Certificates: reading a PEM chain and its private key, checking they belong together, and
//! finding the DNS names the leaf is valid for.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::model::Certificate;

/// Which configured file a certificate problem belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertPart {
    Cert,
    Key,
    /// The pair as a whole (they do not match).
    Pair,
}

/// A certificate problem, with a message ready to show after the key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    pub part: CertPart,
    pub message: String,
}

impl CertError {
    fn new(part: CertPart, message: impl Into<String>) -> Self {
        CertError {
            part,
            message: message.into(),
        }
    }
}

/// An I/O error as a short message: `cannot read "x": No such file or directory`.
pub fn read_error(path: &Path, err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    format!("cannot read {:?}: {text}", path.display().to_string())
}

fn open(path: &Path, part: CertPart) -> Result<BufReader<File>, CertError> {
    let file = File::open(path).map_err(|e| CertError::new(part, read_error(path, &e)))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(CertError::new(
            part,
            format!(
                "cannot read {:?}: it is a directory",
                path.display().to_string()
            ),
        ));
    }
    Ok(BufReader::new(file))
}

/// Reads the chain at `cert_path` (leaf first) and the key at `key_path` (PKCS#8, PKCS#1 or SEC1
/// PEM), and checks that the key is the leaf's.
pub fn load_certificate(cert_path: &Path, key_path: &Path) -> Result<Certificate, CertError> {
    let shown = |p: &Path| p.display().to_string();
    let mut reader = open(cert_path, CertPart::Cert)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut reader)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            CertError::new(
                CertPart::Cert,
                format!("invalid PEM in {:?}: {e}", shown(cert_path)),
            )
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::new(
            CertPart::Cert,
            format!("no PEM certificate found in {:?}", shown(cert_path)),
        ));
    };
    let names = leaf_names(leaf.as_ref()).map_err(|e| {
        CertError::new(
            CertPart::Cert,
            format!("invalid certificate in {:?}: {e}", shown(cert_path)),
        )
    })?;

    let mut reader = open(key_path, CertPart::Key)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut reader)
        .map_err(|e| {
            CertError::new(
                CertPart::Key,
                format!("invalid PEM in {:?}: {e}", shown(key_path)),
            )
        })?
        .ok_or_else(|| {
            CertError::new(
                CertPart::Key,
                format!(
                    "no private key found in {:?} (expected a PKCS#8, PKCS#1 or SEC1 PEM key)",
                    shown(key_path)
                ),
            )
        })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        CertError::new(
            CertPart::Key,
            format!("unsupported private key in {:?}: {e}", shown(key_path)),
        )
    })?;

    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::new(
                CertPart::Pair,
                "certificate and key do not match",
            ))
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(CertError::new(
                CertPart::Cert,
                format!("invalid certificate in {:?}: {e}", shown(cert_path)),
            ))
        }
    }
    Ok(Certificate {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        names,
        key: Arc::new(certified),
    })
}

/// The leaf's DNS names: subjectAltName DNS entries, else the subject CNs; lowercase, deduplicated.
pub fn leaf_names(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    fn push(names: &mut Vec<String>, name: &str) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for general in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(name) = general {
                push(&mut names, name);
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                push(&mut names, cn);
            }
        }
    }
    Ok(names)
}
