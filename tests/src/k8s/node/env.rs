//! A container's environment from its pod spec: literal values (with `$(VAR)` expansion),
//! `fieldRef` (the downward API), `secretKeyRef`, `configMapKeyRef`, `resourceFieldRef` and
//! `envFrom`. Secrets and ConfigMaps are read through the API when the container starts.

use std::collections::HashMap;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};

use super::container::expand;

/// The value of a downward-API field path for `pod` (whose IP is `pod_ip`).
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let lookup = |map: &Option<std::collections::BTreeMap<String, String>>, key: &str| {
        map.as_ref().and_then(|m| m.get(key).cloned())
    };
    let quoted_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(host_ip.to_string()),
        "metadata.labels" | "metadata.annotations" => {
            let map = if path == "metadata.labels" {
                &meta.labels
            } else {
                &meta.annotations
            };
            Some(
                map.iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
        _ => {
            if let Some(key) = quoted_key("metadata.labels") {
                lookup(&meta.labels, &key)
            } else if let Some(key) = quoted_key("metadata.annotations") {
                lookup(&meta.annotations, &key)
            } else {
                None
            }
        }
    }
}

/// Reads Secrets and ConfigMaps of one namespace, once each.
#[derive(Debug)]
pub struct ObjectCache {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_cache: HashMap<String, Option<Secret>>,
    config_map_cache: HashMap<String, Option<ConfigMap>>,
}

impl ObjectCache {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            secret_cache: HashMap::new(),
            config_map_cache: HashMap::new(),
        }
    }

    pub async fn secret(&mut self, name: &str) -> anyhow::Result<Option<Secret>> {
        if !self.secret_cache.contains_key(name) {
            let s = self.secrets.get_opt(name).await.context("read a secret")?;
            self.secret_cache.insert(name.to_string(), s);
        }
        Ok(self.secret_cache[name].clone())
    }

    pub async fn config_map(&mut self, name: &str) -> anyhow::Result<Option<ConfigMap>> {
        if !self.config_map_cache.contains_key(name) {
            let c = self
                .config_maps
                .get_opt(name)
                .await
                .context("read a config map")?;
            self.config_map_cache.insert(name.to_string(), c);
        }
        Ok(self.config_map_cache[name].clone())
    }

    /// The decoded entries of a Secret (`None` when it does not exist).
    pub async fn secret_entries(
        &mut self,
        name: &str,
    ) -> anyhow::Result<Option<Vec<(String, Vec<u8>)>>> {
        Ok(self.secret(name).await?.map(|s| {
            s.data
                .into_iter()
                .flatten()
                .map(|(k, v)| (k, v.0))
                .chain(
                    s.string_data
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k, v.into_bytes())),
                )
                .collect()
        }))
    }

    /// The entries of a ConfigMap, text and binary (`None` when it does not exist).
    pub async fn config_map_entries(
        &mut self,
        name: &str,
    ) -> anyhow::Result<Option<Vec<(String, Vec<u8>)>>> {
        Ok(self.config_map(name).await?.map(|c| {
            c.data
                .into_iter()
                .flatten()
                .map(|(k, v)| (k, v.into_bytes()))
                .chain(c.binary_data.into_iter().flatten().map(|(k, v)| (k, v.0)))
                .collect()
        }))
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The container's env entries from its spec, in order, resolved and expanded. `base` holds
/// the variables `$(VAR)` may refer to besides earlier entries (the node's).
pub async fn resolve(
    container: &Container,
    pod: &Pod,
    pod_ip: &str,
    host_ip: &str,
    objects: &mut ObjectCache,
    base: &[(String, String)],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut vars: HashMap<String, String> = base.iter().cloned().collect();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |vars: &mut HashMap<String, String>, k: String, v: String| {
        vars.insert(k.clone(), v.clone());
        out.retain(|(name, _)| *name != k);
        out.push((k, v));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let entries = if let Some(r) = &from.config_map_ref {
            match objects.config_map_entries(&r.name).await? {
                Some(e) => e,
                None if r.optional == Some(true) => Vec::new(),
                None => bail!("configmap {} not found", r.name),
            }
        } else if let Some(r) = &from.secret_ref {
            match objects.secret_entries(&r.name).await? {
                Some(e) => e,
                None if r.optional == Some(true) => Vec::new(),
                None => bail!("secret {} not found", r.name),
            }
        } else {
            Vec::new()
        };
        for (k, v) in entries {
            push(&mut vars, format!("{prefix}{k}"), text(v));
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(expand(v, &vars)),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    Some(
                        field_value(pod, &f.field_path, pod_ip, host_ip)
                            .with_context(|| format!("unsupported fieldRef {}", f.field_path))?,
                    )
                } else if let Some(s) = &from.secret_key_ref {
                    let found = objects
                        .secret_entries(&s.name)
                        .await?
                        .and_then(|e| e.into_iter().find(|(k, _)| *k == s.key));
                    match found {
                        Some((_, v)) => Some(text(v)),
                        None if s.optional == Some(true) => None,
                        None => bail!("secret {} has no key {}", s.name, s.key),
                    }
                } else if let Some(c) = &from.config_map_key_ref {
                    let found = objects
                        .config_map_entries(&c.name)
                        .await?
                        .and_then(|e| e.into_iter().find(|(k, _)| *k == c.key));
                    match found {
                        Some((_, v)) => Some(text(v)),
                        None if c.optional == Some(true) => None,
                        None => bail!("configmap {} has no key {}", c.name, c.key),
                    }
                } else if from.resource_field_ref.is_some() {
                    // No resource accounting on process nodes: report one unit.
                    Some("1".to_string())
                } else {
                    None
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            push(&mut vars, var.name.clone(), v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    #[test]
    fn field_paths_resolve_like_the_downward_api() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some("node-b".into()),
                ..Default::default()
            }),
            ..Pod::default()
        };
        let f = |p: &str| field_value(&pod, p, "10.244.1.5", "10.244.1.1");
        assert_eq!(f("metadata.name").as_deref(), Some("web-0"));
        assert_eq!(f("metadata.namespace").as_deref(), Some("ns"));
        assert_eq!(f("status.podIP").as_deref(), Some("10.244.1.5"));
        assert_eq!(f("spec.nodeName").as_deref(), Some("node-b"));
        assert_eq!(f("metadata.labels['app']").as_deref(), Some("web"));
        assert_eq!(f("metadata.labels").as_deref(), Some("app=\"web\""));
        assert_eq!(f("status.nope"), None);
    }
}
