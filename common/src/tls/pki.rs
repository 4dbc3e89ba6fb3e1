//! Issuing an instance's CA and its members' certificates (rcgen, ECDSA P-256). The CA is kept
//! by the controller (its key never reaches a member); a member gets the CA certificate, its
//! server certificate and the three client certificates ([`MemberTls`]).

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// How long a CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a member's or client's certificate is valid, unless [`set_leaf_lifetime`] says.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// The lifetime [`set_leaf_lifetime`] set for this process.
static LEAF_LIFETIME: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
/// Certificates start a little in the past, so clocks a few minutes apart agree.
const BACKDATE: Duration = Duration::hours(1);

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct PkiError {
    what: &'static str,
    source: rcgen::Error,
}

fn fail(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError { what, source }
}

/// A certificate and its private key, both PEM. `Debug` shows neither key nor certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertifiedKey(<redacted>)")
    }
}

/// An instance's CA: its certificate and key (PEM). `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceCa {
    instance: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for InstanceCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceCa")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Everything one member needs: the CA certificate, its server certificate and the client
/// certificates of `replicator`, `postgres` and `toygres_rewind` ([`super::REWIND_ROLE`]).
/// `Debug` shows no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberTls {
    pub ca_cert_pem: String,
    pub server: CertifiedKey,
    pub replicator: CertifiedKey,
    pub superuser: CertifiedKey,
    pub rewind: CertifiedKey,
}

impl MemberTls {
    /// The content of each file of a member's TLS directory (see [`super::MEMBER_FILES`]).
    pub fn files(&self) -> [(&'static str, &str); 9] {
        [
            (super::CA_CERT, &self.ca_cert_pem),
            (super::SERVER_CERT, &self.server.cert_pem),
            (super::SERVER_KEY, &self.server.key_pem),
            (super::REPLICATOR_CERT, &self.replicator.cert_pem),
            (super::REPLICATOR_KEY, &self.replicator.key_pem),
            (super::SUPERUSER_CERT, &self.superuser.cert_pem),
            (super::SUPERUSER_KEY, &self.superuser.key_pem),
            (super::REWIND_CERT, &self.rewind.cert_pem),
            (super::REWIND_KEY, &self.rewind.key_pem),
        ]
    }
}

fn ca_params(instance: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "toygres");
    dn.push(
        DnType::CommonName,
        format!("toygres instance {instance} CA"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Makes every leaf certificate this process issues from now on valid for `lifetime` (a
/// hidden setting: tests of renewal use seconds-long certificates). The first call wins.
pub fn set_leaf_lifetime(lifetime: std::time::Duration) {
    let lifetime = Duration::try_from(lifetime).unwrap_or(LEAF_VALIDITY);
    let _ = LEAF_LIFETIME.set(lifetime.max(Duration::seconds(1)));
}

fn leaf_validity() -> Duration {
    LEAF_LIFETIME.get().copied().unwrap_or(LEAF_VALIDITY)
}

/// Whether the leaf certificate in `cert_pem` should be renewed at `now`: when a third of its
/// lifetime or less is left (its lifetime counted from its intended start, after
/// [`BACKDATE`]). A certificate that does not parse is due (it is replaced by a good one).
pub fn renewal_due(cert_pem: &str, now: std::time::SystemTime) -> bool {
    let now = OffsetDateTime::from(now);
    let Some((not_before, not_after)) = validity(cert_pem) else {
        return true;
    };
    let start = (not_before + BACKDATE).min(not_after);
    let left = not_after - now;
    left * 3 <= not_after - start
}

/// The validity period of the first certificate in `cert_pem`.
pub fn validity(cert_pem: &str) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let validity = cert.validity();
    Some((
        validity.not_before.to_datetime(),
        validity.not_after.to_datetime(),
    ))
}

fn leaf_params(common_name: &str) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.not_before = now - BACKDATE;
    params.not_after = now + leaf_validity();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

impl InstanceCa {
    /// A new CA for `instance`.
    pub fn generate(instance: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(fail("generate the CA key"))?;
        let now = OffsetDateTime::now_utc();
        let mut params = ca_params(instance);
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(fail("self-sign the CA certificate"))?;
        Ok(Self {
            instance: instance.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA kept earlier (as [`Self::generate`] made it).
    pub fn from_pem(instance: &str, cert_pem: String, key_pem: String) -> Result<Self, PkiError> {
        KeyPair::from_pem(&key_pem).map_err(fail("read the CA key"))?;
        Ok(Self {
            instance: instance.to_string(),
            cert_pem,
            key_pem,
        })
    }

    /// The issuer: the CA's name and key (the name is rebuilt the way `generate` made it).
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(fail("read the CA key"))?;
        Ok(Issuer::new(ca_params(&self.instance), key))
    }

    /// A server certificate for `names` (DNS names or IP addresses), CN the first name.
    pub fn issue_server(&self, member: &str, names: &[String]) -> Result<CertifiedKey, PkiError> {
        let mut params = leaf_params(member);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(fail("use a member name as a DNS name"))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        self.sign(params)
    }

    /// A client certificate for the Postgres role `user` (its CN, as the `cert` method reads it).
    pub fn issue_client(&self, user: &str) -> Result<CertifiedKey, PkiError> {
        let mut params = leaf_params(user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate().map_err(fail("generate a key"))?;
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(fail("sign a certificate"))?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Everything member `member` needs, its server certificate valid for `names`.
    pub fn member_tls(&self, member: &str, names: &[String]) -> Result<MemberTls, PkiError> {
        Ok(MemberTls {
            ca_cert_pem: self.cert_pem.clone(),
            server: self.issue_server(member, names)?,
            replicator: self.issue_client("replicator")?,
            superuser: self.issue_client("postgres")?,
            rewind: self.issue_client(super::REWIND_ROLE)?,
        })
    }
}

/// The names a member's server certificate carries: loopback (local platform) and, on
/// Kubernetes, the member's pod `<member>-0` in the headless `<instance>-members` Service and
/// the instance's `-rw` and `-ro` Services, each short and qualified with `namespace`.
pub fn member_server_names(instance: &str, member: &str, namespace: Option<&str>) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let services = [
        format!("{member}-0.{instance}-members"),
        format!("{instance}-rw"),
        format!("{instance}-ro"),
    ];
    for service in services {
        if let Some(ns) = namespace {
            for qualified in [
                format!("{service}.{ns}"),
                format!("{service}.{ns}.svc"),
                format!("{service}.{ns}.svc.cluster.local"),
            ] {
                names.push(qualified);
            }
        }
        names.push(service);
    }
    names
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_member_gets_certificates_from_its_instance_ca_and_debug_hides_keys() {
        let ca = InstanceCa::generate("orders").unwrap();
        let names = member_server_names("orders", "orders-1", Some("db"));
        assert!(names.contains(&"orders-1-0.orders-members.db.svc".to_string()));
        assert!(names.contains(&"orders-rw".to_string()));
        assert!(names.contains(&"127.0.0.1".to_string()));
        let again =
            InstanceCa::from_pem("orders", ca.cert_pem.clone(), ca.key_pem.clone()).unwrap();
        let tls = again.member_tls("orders-1", &names).unwrap();
        assert_eq!(tls.ca_cert_pem, ca.cert_pem);
        for (name, content) in tls.files() {
            let is_key = name.ends_with(".key");
            assert_eq!(content.contains("PRIVATE KEY"), is_key, "{name}");
        }
        let printed = format!("{tls:?} {ca:?}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        assert_ne!(tls.replicator.key_pem, tls.superuser.key_pem);
        assert_ne!(tls.rewind.key_pem, tls.superuser.key_pem);
        let files: Vec<_> = tls.files().iter().map(|(name, _)| *name).collect();
        let expected: Vec<_> = super::super::MEMBER_FILES.iter().map(|(n, _)| *n).collect();
        assert_eq!(files, expected);
    }

    #[test]
    fn a_certificate_is_due_for_renewal_with_a_third_of_its_lifetime_left() {
        let ca = InstanceCa::generate("orders").unwrap();
        let cert = ca.issue_client("postgres").unwrap().cert_pem;
        let (not_before, not_after) = validity(&cert).unwrap();
        assert_eq!(not_after - (not_before + BACKDATE), LEAF_VALIDITY);
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        assert!(!renewal_due(&cert, now));
        assert!(!renewal_due(&cert, now + day * 240));
        assert!(renewal_due(&cert, now + day * 250));
        assert!(renewal_due(&cert, now + day * 400));
        assert!(renewal_due("not a certificate", now));
    }
}
