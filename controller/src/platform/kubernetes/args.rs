//! The `toygres controller` flags that pick the platform and configure the Kubernetes one (each
//! also read from an environment variable, as the Helm chart sets them).

use std::path::PathBuf;

/// Which platform the controller runs instances on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformKind {
    /// Members are `toygres-sidecar` processes on this machine (the default).
    #[default]
    Local,
    /// Members are StatefulSets in a Kubernetes namespace.
    Kubernetes,
    /// Members are simulated by a `toygres-sidecar fleet` double (benchmarks only).
    #[value(hide = true)]
    FleetSim,
}

/// The platform flags of `toygres controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlatformArgs {
    /// Where instances run
    #[arg(long = "platform", env = "TOYGRES_PLATFORM", value_enum, default_value_t = PlatformKind::Local)]
    pub kind: PlatformKind,

    /// fleet-sim: the URL of the `toygres-sidecar fleet` double simulating the members
    #[arg(long, env = "TOYGRES_FLEET_SIM_URL", value_name = "URL", hide = true)]
    pub fleet_sim_url: Option<String>,

    /// Kubernetes: the kubeconfig file [default: the in-cluster service account]
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubernetes: the namespace instances live in [default: the kubeconfig's or the pod's]
    #[arg(long, env = "TOYGRES_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,

    /// Kubernetes: the image of the members' pods
    #[arg(long, env = "TOYGRES_SIDECAR_IMAGE", value_name = "IMAGE", default_value = concat!("toygres/sidecar:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,

    /// Kubernetes: the storage class of the members' PVCs [default: the cluster's default class]
    #[arg(long, env = "TOYGRES_STORAGE_CLASS", value_name = "CLASS")]
    pub storage_class: Option<String>,

    /// Kubernetes: the size of each member's PVC
    #[arg(
        long,
        env = "TOYGRES_STORAGE_SIZE",
        value_name = "QUANTITY",
        default_value = "1Gi"
    )]
    pub storage_size: String,

    /// Kubernetes: the CPU each member requests
    #[arg(
        long,
        env = "TOYGRES_MEMBER_CPU",
        value_name = "QUANTITY",
        default_value = "100m"
    )]
    pub member_cpu: String,

    /// Kubernetes: the memory each member requests (and is limited to)
    #[arg(
        long,
        env = "TOYGRES_MEMBER_MEMORY",
        value_name = "QUANTITY",
        default_value = "256Mi"
    )]
    pub member_memory: String,

    /// Kubernetes: take a coordination Lease before acting, so that of several controller
    /// replicas one is active and the others wait as standbys
    #[arg(long, env = "TOYGRES_LEADER_ELECTION", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Kubernetes: the name of that Lease (in the instances' namespace)
    #[arg(
        long,
        env = "TOYGRES_LEASE_NAME",
        value_name = "NAME",
        default_value = "toygres-controller"
    )]
    pub lease_name: String,

    /// Kubernetes: this controller's API as the members' pods reach it (the chart sets its
    /// Service), for the sidecars' pushed reports: a dead Postgres or a lost primary is then
    /// checked at once instead of at the next health round [default: no reports]
    #[arg(long, env = "TOYGRES_MEMBER_NOTIFY_URL", value_name = "URL")]
    pub member_notify_url: Option<String>,

    /// Kubernetes: a ConfigMap of the namespace whose `ca.crt` is the CA of this controller's
    /// certificate, which member pods verify an https --member-notify-url with (the chart sets
    /// its own)
    #[arg(long, env = "TOYGRES_MEMBER_NOTIFY_CA_CONFIGMAP", value_name = "NAME")]
    pub member_notify_ca_configmap: Option<String>,
}

impl PlatformArgs {
    /// The Kubernetes platform's settings from these flags and the sidecars' isolation lease.
    pub fn kubernetes_config(
        &self,
        isolation_lease_secs: Option<u64>,
    ) -> super::platform::KubernetesPlatformConfig {
        let mut config = super::platform::KubernetesPlatformConfig::new(self.sidecar_image.clone());
        config.kubeconfig = self
            .kubeconfig
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        config.namespace = self.namespace.clone().filter(|ns| !ns.is_empty());
        config.storage.class = self.storage_class.clone().filter(|c| !c.is_empty());
        config.storage.size = self.storage_size.clone();
        config.resources.cpu = self.member_cpu.clone();
        config.resources.memory = self.member_memory.clone();
        config.isolation_lease_secs = isolation_lease_secs;
        config.notify_url = self.member_notify_url.clone().filter(|url| !url.is_empty());
        config.notify_ca_config_map = self
            .member_notify_ca_configmap
            .clone()
            .filter(|name| !name.is_empty());
        config
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        args: PlatformArgs,
    }

    fn parse(flags: &[&str]) -> PlatformArgs {
        let mut argv = vec!["toygres"];
        argv.extend_from_slice(flags);
        TestCli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn the_local_platform_is_the_default_and_kubernetes_takes_its_settings() {
        assert_eq!(parse(&[]).kind, PlatformKind::Local);
        let args = parse(&[
            "--platform",
            "kubernetes",
            "--kubeconfig",
            "/k/config",
            "--namespace",
            "db",
            "--sidecar-image",
            "registry/toygres/sidecar:1",
            "--storage-class",
            "fast",
            "--storage-size",
            "5Gi",
            "--member-notify-url",
            "http://toygres.db.svc:8080",
            "--member-notify-ca-configmap",
            "toygres-ca",
        ]);
        assert_eq!(args.kind, PlatformKind::Kubernetes);
        let config = args.kubernetes_config(Some(15));
        assert_eq!(config.kubeconfig, Some(PathBuf::from("/k/config")));
        assert_eq!(config.namespace.as_deref(), Some("db"));
        assert_eq!(config.sidecar_image, "registry/toygres/sidecar:1");
        assert_eq!(config.storage.class.as_deref(), Some("fast"));
        assert_eq!(config.storage.size, "5Gi");
        assert_eq!(config.isolation_lease_secs, Some(15));
        assert_eq!(
            config.notify_url.as_deref(),
            Some("http://toygres.db.svc:8080")
        );
        assert_eq!(config.notify_ca_config_map.as_deref(), Some("toygres-ca"));
        assert!(TestCli::try_parse_from(["toygres", "--platform", "nomad"]).is_err());
    }
}
