//! An instance's CA and its members' certificates as Secrets: `<instance>-ca` holds the CA's
//! certificate and key and is never mounted (only the controller reads it, to issue member
//! certificates and to verify members); `<member>-tls` holds what one member's sidecar reads
//! from `--tls-dir` ([`toygres_common::tls::MEMBER_FILES`]) and is mounted into its pod as
//! files (see [`super::member`]). Both are created once and owned by the instance's root, so
//! deleting the instance removes them. Built Secrets print no value (see [`InstanceSecret`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use toygres_common::tls::pki::{InstanceCa, MemberTls};

use super::credentials::{opaque_secret, InstanceSecret};
use super::InstanceSettings;

/// The key of the CA's certificate in `<instance>-ca`.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The key of the CA's private key in `<instance>-ca`.
pub const CA_KEY_KEY: &str = "ca.key";

/// `<instance>-ca`.
pub fn ca_secret_name(instance: &str) -> String {
    format!("{instance}-ca")
}

/// `<member>-tls`.
pub fn member_tls_secret_name(member: &str) -> String {
    format!("{member}-tls")
}

/// The instance's CA Secret.
pub fn ca_secret(
    settings: &InstanceSettings,
    ca: &InstanceCa,
    owner: &OwnerReference,
) -> InstanceSecret {
    let data = BTreeMap::from([
        (
            CA_CERT_KEY.to_string(),
            ByteString(ca.cert_pem.as_bytes().to_vec()),
        ),
        (
            CA_KEY_KEY.to_string(),
            ByteString(ca.key_pem.as_bytes().to_vec()),
        ),
    ]);
    opaque_secret(settings, ca_secret_name(&settings.instance), data, owner)
}

/// A member's TLS Secret: a key per file of its TLS directory.
pub fn member_tls_secret(
    settings: &InstanceSettings,
    member: &str,
    tls: &MemberTls,
    owner: &OwnerReference,
) -> InstanceSecret {
    opaque_secret(
        settings,
        member_tls_secret_name(member),
        member_tls_data(tls),
        owner,
    )
}

/// A member's TLS Secret's data: a key per file of its TLS directory.
pub fn member_tls_data(tls: &MemberTls) -> BTreeMap<String, ByteString> {
    tls.files()
        .into_iter()
        .map(|(name, content)| (name.to_string(), ByteString(content.as_bytes().to_vec())))
        .collect()
}

/// Reads key `key` of a Secret as text.
pub fn text_of(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use toygres_common::tls::pki::member_server_names;

    use super::*;
    use crate::platform::kubernetes::fixtures;

    #[test]
    fn the_ca_stays_in_its_own_secret_and_a_member_gets_its_files_without_the_ca_key() {
        let settings = fixtures::orders();
        let ca = InstanceCa::generate("orders").unwrap();
        let names = member_server_names("orders", "orders-1", Some(&settings.namespace));
        let tls = ca.member_tls("orders-1", &names).unwrap();
        let built = member_tls_secret(&settings, "orders-1", &tls, &fixtures::owner());
        assert!(!format!("{built:?}").contains("PRIVATE KEY"));
        let secret = built.into_secret();
        assert_eq!(secret.metadata.name.as_deref(), Some("orders-1-tls"));
        let mut keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
        keys.sort();
        let mut expected: Vec<_> = toygres_common::tls::MEMBER_FILES
            .iter()
            .map(|(name, _)| name.to_string())
            .collect();
        expected.sort();
        assert_eq!(keys, expected);
        for content in secret.data.as_ref().unwrap().values() {
            assert!(!String::from_utf8_lossy(&content.0).contains(&ca.key_pem));
        }
        let ca_secret = ca_secret(&settings, &ca, &fixtures::owner()).into_secret();
        assert_eq!(ca_secret.metadata.name.as_deref(), Some("orders-ca"));
        assert_eq!(text_of(&ca_secret, CA_KEY_KEY).unwrap(), ca.key_pem);
        assert_eq!(
            ca_secret.metadata.owner_references.unwrap()[0].name,
            "orders-toygres"
        );
    }
}
