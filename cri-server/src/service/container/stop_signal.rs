//! The stop signal of a container (KEP-4960): ContainerConfig.stop_signal when the kubelet
//! sends one, else the image's STOPSIGNAL, else SIGTERM. StopContainer sends it, and
//! ContainerStatus.stop_signal reports it.

use cri_api::v1 as cri;

/// The signal StopContainer sends, as a name the OCI runtime's `kill` takes (`SIGTERM`,
/// `SIGRTMIN+3`), or None for SIGTERM: the config's if set, else the image's STOPSIGNAL.
pub(super) fn choose(config: &cri::ContainerConfig, image: Option<String>) -> Option<String> {
    match config.stop_signal() {
        cri::Signal::RuntimeDefault => image.filter(|s| !s.trim().is_empty()),
        asked => Some(runtime_name(asked)),
    }
}

/// `SIGRTMINPLUS3` → `SIGRTMIN+3`, `SIGRTMAXMINUS2` → `SIGRTMAX-2`; others unchanged.
fn runtime_name(signal: cri::Signal) -> String {
    let name = bare_name(signal);
    if let Some(n) = name.strip_prefix("SIGRTMINPLUS") {
        return format!("SIGRTMIN+{n}");
    }
    if let Some(n) = name.strip_prefix("SIGRTMAXMINUS") {
        return format!("SIGRTMAX-{n}");
    }
    name.to_owned()
}

/// The enum value's name without the proto's `SIGNAL_` prefix.
fn bare_name(signal: cri::Signal) -> &'static str {
    let name = signal.as_str_name();
    name.strip_prefix("SIGNAL_").unwrap_or(name)
}

/// What ContainerStatus.stop_signal reports for the signal StopContainer sends (None:
/// SIGTERM). An image's STOPSIGNAL may be a name with or without `SIG`, or a number;
/// one the CRI has no value for is reported as RUNTIME_DEFAULT.
pub(super) fn reported(signal: Option<&str>) -> cri::Signal {
    let Some(s) = signal.map(str::trim) else {
        return cri::Signal::Sigterm;
    };
    let name = match s.parse::<i32>() {
        Ok(n) => match nix::sys::signal::Signal::try_from(n) {
            Ok(sig) => sig.as_str().to_owned(),
            Err(_) => return cri::Signal::RuntimeDefault,
        },
        Err(_) => {
            let upper = s.to_ascii_uppercase();
            let with_sig = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            with_sig
                .replace("RTMIN+", "RTMINPLUS")
                .replace("RTMAX-", "RTMAXMINUS")
        }
    };
    (0..=i32::from(u8::MAX))
        .filter_map(|n| cri::Signal::try_from(n).ok())
        .find(|sig| bare_name(*sig) == name)
        .unwrap_or(cri::Signal::RuntimeDefault)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(signal: cri::Signal) -> cri::ContainerConfig {
        cri::ContainerConfig {
            stop_signal: signal as i32,
            ..Default::default()
        }
    }

    #[test]
    fn the_configs_signal_wins_then_the_images() {
        let image = || Some("SIGQUIT".to_owned());
        assert_eq!(
            choose(&config(cri::Signal::Sigusr1), image()).as_deref(),
            Some("SIGUSR1")
        );
        assert_eq!(
            choose(&config(cri::Signal::RuntimeDefault), image()).as_deref(),
            Some("SIGQUIT")
        );
        assert_eq!(choose(&config(cri::Signal::RuntimeDefault), None), None);
        assert_eq!(
            choose(&config(cri::Signal::Sigrtminplus3), None).as_deref(),
            Some("SIGRTMIN+3")
        );
    }

    #[test]
    fn reported_signals() {
        assert_eq!(reported(None), cri::Signal::Sigterm);
        assert_eq!(reported(Some("SIGQUIT")), cri::Signal::Sigquit);
        assert_eq!(reported(Some("quit")), cri::Signal::Sigquit);
        assert_eq!(reported(Some("9")), cri::Signal::Sigkill);
        assert_eq!(reported(Some("SIGRTMIN+3")), cri::Signal::Sigrtminplus3);
        assert_eq!(reported(Some("SIGRTMAX-2")), cri::Signal::Sigrtmaxminus2);
        assert_eq!(reported(Some("SIGNOPE")), cri::Signal::RuntimeDefault);
    }
}
