//! The node name: `--hostname-override` or `hostnameOverride`, else the host name.

use crate::error::{Error, Result};

/// Where Linux keeps the host name (what `os.Hostname()` returns upstream).
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The host name of this machine, if it can be read.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string(HOSTNAME_FILE).ok()
}

/// The node name, as upstream's `NodeName`: the override trimmed and lower-cased if it is
/// not blank, else the host name (from `host`) trimmed and lower-cased.
///
/// # Errors
/// [`Error::NodeName`] when both are blank.
pub fn resolve(hostname_override: &str, host: impl FnOnce() -> Option<String>) -> Result<String> {
    let name = hostname_override.trim();
    let name = if name.is_empty() {
        host().unwrap_or_default().trim().to_owned()
    } else {
        name.to_owned()
    };
    if name.is_empty() {
        return Err(Error::NodeName);
    }
    Ok(name.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_wins_and_is_trimmed_and_lower_cased() {
        assert_eq!(
            resolve("  Node-A \n", || panic!("host name read")).unwrap(),
            "node-a"
        );
    }

    #[test]
    fn blank_override_falls_back_to_the_host_name() {
        assert_eq!(
            resolve(" ", || Some("Worker-1\n".into())).unwrap(),
            "worker-1"
        );
        assert!(matches!(resolve("", || None), Err(Error::NodeName)));
        assert!(matches!(
            resolve("", || Some("\n".into())),
            Err(Error::NodeName)
        ));
    }
}
