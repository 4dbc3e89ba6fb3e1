//! The control plane's key material, generated per harness with rcgen: a CA, the apiserver's
//! serving certificate (valid for the bridge address, loopback and the `kubernetes` Service's
//! names and ClusterIP) and the service-account signing key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// Paths of the PEM files one control plane uses.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA that signed the serving certificate (`ca.crt`, also given to pods).
    pub ca_cert: PathBuf,
    /// The CA as PEM text, for kubeconfigs.
    pub ca_pem: String,
    /// The apiserver's serving certificate and key.
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// The service-account signing key (PKCS#8 ECDSA P-256).
    pub service_account_key: PathBuf,
    /// Its public key (`PUBLIC KEY` PEM), which the apiserver verifies tokens with.
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// Writes a fresh CA, serving certificate and service-account key under `dir`.
    pub fn generate(dir: &Path, ips: &[IpAddr]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).context("create the pki dir")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("ca params")?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "toygres-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().context("ca key")?)
            .context("self-sign the ca")?;

        let mut params = CertificateParams::new(vec![
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
            "localhost".to_string(),
        ])
        .context("serving params")?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let key = KeyPair::generate().context("serving key")?;
        let cert = params
            .signed_by(&key, &ca)
            .context("sign the serving cert")?;

        let pki = Self {
            ca_cert: dir.join("ca.crt"),
            ca_pem: ca.pem(),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
        };
        std::fs::write(&pki.ca_cert, &pki.ca_pem).context("write ca.crt")?;
        std::fs::write(&pki.serving_cert, cert.pem()).context("write apiserver.crt")?;
        std::fs::write(&pki.serving_key, key.serialize_pem()).context("write apiserver.key")?;
        let sa = KeyPair::generate().context("service-account key")?;
        std::fs::write(&pki.service_account_key, sa.serialize_pem()).context("write sa.key")?;
        std::fs::write(&pki.service_account_pub, sa.public_key_pem()).context("write sa.pub")?;
        Ok(pki)
    }
}
