//! Every `OVLC_*` environment variable the engine honours, read once per
//! process (the first time any is asked for) and parsed here, so that the
//! knobs of a run are listed in one place and a misspelt value falls back to
//! the documented default the same way everywhere.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::model::Fault;

/// The variable by which the host tells a rootless agent it answers its
/// requests on descriptor 3.
pub const HOST_ACK_FD: &str = "OVLC_HOST_ACK_FD";

/// The settings of this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `OVLC_MOUNT_API=legacy`: mount with mount(2) instead of the new mount API.
    pub legacy_mount_api: bool,
    /// `OVLC_BACKING_SIZE`: the size of each host instance's tmpfs (default 1g).
    pub backing_size: Option<String>,
    /// `OVLC_INSTANCE_TIMEOUT` (seconds, > 0): the limit of one instance.
    pub instance_timeout: Option<Duration>,
    /// `OVLC_VM_TIMEOUT` (seconds): the limit of one whole VM batch.
    pub vm_timeout: Option<Duration>,
    /// `OVLC_VM_MEMORY` (MiB): each guest's memory.
    pub vm_memory_mib: Option<u32>,
    /// `OVLC_ACCEL`: `kvm`, or `auto` (probe KVM first); TCG otherwise (the default).
    pub accel: Option<String>,
    /// `OVLC_GUEST_BINARY`: the static `ovlc` to use as the guest agent.
    pub guest_binary: Option<PathBuf>,
    /// `OVLC_HOST_ACK_FD=3`: this process is a rootless agent the host
    /// answers requests from on descriptor 3 (set by the host, not by users).
    pub host_answers: bool,
    /// `OVLC_FAULTS="panic:ID;hang:ID;flaky:ID;kmsg:ID"`: instances that fail
    /// on purpose, to test recovery and the trust checks.
    pub faults: Vec<(String, Fault)>,
}

impl Settings {
    /// The settings an environment gives (`var` looks one variable up).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Settings {
        let secs = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
        Settings {
            legacy_mount_api: var("OVLC_MOUNT_API").is_some_and(|v| v == "legacy"),
            backing_size: var("OVLC_BACKING_SIZE"),
            instance_timeout: secs("OVLC_INSTANCE_TIMEOUT").filter(|d| !d.is_zero()),
            vm_timeout: secs("OVLC_VM_TIMEOUT"),
            vm_memory_mib: var("OVLC_VM_MEMORY").and_then(|m| m.trim().parse().ok()),
            accel: var("OVLC_ACCEL"),
            guest_binary: var("OVLC_GUEST_BINARY").filter(|p| !p.is_empty()).map(PathBuf::from),
            host_answers: var(HOST_ACK_FD).is_some_and(|v| v == "3"),
            faults: parse_faults(&var("OVLC_FAULTS").unwrap_or_default()),
        }
    }
}

/// This process's settings, from its environment.
pub fn get() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| Settings::from_lookup(|name| std::env::var(name).ok()))
}

/// `panic:ID;hang:ID;flaky:ID;kmsg:ID`; unknown kinds are ignored.
pub fn parse_faults(spec: &str) -> Vec<(String, Fault)> {
    spec.split(';')
        .filter_map(|f| {
            let (kind, id) = f.trim().split_once(':')?;
            let fault = match kind {
                "panic" => Fault::Panic,
                "hang" => Fault::Hang,
                "flaky" => Fault::Flaky,
                "kmsg" => Fault::KernelWarning,
                _ => return None,
            };
            Some((id.to_string(), fault))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Settings {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn an_empty_environment_is_the_defaults() {
        assert_eq!(from(&[]), Settings::default());
    }

    #[test]
    fn values_are_parsed_and_bad_ones_fall_back() {
        let s = from(&[
            ("OVLC_MOUNT_API", "legacy"),
            ("OVLC_INSTANCE_TIMEOUT", "5"),
            ("OVLC_VM_TIMEOUT", "soon"),
            ("OVLC_VM_MEMORY", "512"),
            ("OVLC_GUEST_BINARY", ""),
        ]);
        assert!(s.legacy_mount_api);
        assert_eq!(s.instance_timeout, Some(Duration::from_secs(5)));
        assert_eq!(s.vm_timeout, None, "not a number: the default");
        assert_eq!(s.vm_memory_mib, Some(512));
        assert_eq!(s.guest_binary, None, "empty is unset");
        assert_eq!(from(&[("OVLC_INSTANCE_TIMEOUT", "0")]).instance_timeout, None, "0 would stop every instance");
        assert!(!from(&[("OVLC_MOUNT_API", "new")]).legacy_mount_api);
    }

    #[test]
    fn faults_name_instances() {
        let f = parse_faults("panic:a/b; hang:c;bogus:d;flaky:e;kmsg:f;nocolon");
        assert_eq!(
            f,
            vec![
                ("a/b".to_string(), Fault::Panic),
                ("c".to_string(), Fault::Hang),
                ("e".to_string(), Fault::Flaky),
                ("f".to_string(), Fault::KernelWarning)
            ]
        );
        assert!(parse_faults("").is_empty());
    }
}
