//! A small blocking client of systemd's manager (`org.freedesktop.systemd1.Manager`) over D-Bus:
//! what a cgroup driver needs — start a transient unit and wait for its job, change its
//! properties, stop it, reset its failed state. zbus does the protocol; the calls block the
//! calling thread on zbus's own executor, so the client works in berth-runtime (no async
//! runtime) and from a `spawn_blocking` task in berthd.
//!
//! The connection is the system bus, or, when no bus daemon answers (a node without dbus-daemon,
//! or systemd not yet connected to it), systemd's private socket `/run/systemd/private`, as runc
//! does as root.

use std::future::Future;
use std::time::Duration;

use futures_util::{future, StreamExt};
use zbus::zvariant::{OwnedObjectPath, Value};

use super::properties::{Property, PropertyValue};
use crate::CgroupError;

/// How long a start or stop job may take before berth gives up waiting for it.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// systemd's private socket (root only; no bus daemon involved).
const PRIVATE_SOCKET: &str = "unix:path=/run/systemd/private";

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    #[allow(clippy::type_complexity)]
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    fn set_unit_properties(
        &self,
        name: &str,
        runtime: bool,
        properties: &[(&str, Value<'_>)],
    ) -> zbus::Result<()>;

    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    fn subscribe(&self) -> zbus::Result<()>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: zbus::zvariant::ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// A connection to systemd.
pub struct Systemd {
    manager: ManagerProxy<'static>,
    version: u32,
}

impl std::fmt::Debug for Systemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Systemd").finish_non_exhaustive()
    }
}

/// What a unit to start is made of, besides its name.
#[derive(Debug, Clone, Default)]
pub struct TransientUnit {
    /// `Slice=`: the slice the unit goes in (a scope's pod slice, a slice's parent).
    pub slice: String,
    /// `Description=`.
    pub description: String,
    /// `PIDs=`: the processes a scope starts with (a scope needs at least one).
    pub pids: Vec<u32>,
    /// `Delegate=yes`: the unit's cgroup subtree is the caller's to manage.
    pub delegate: bool,
    /// Resource properties.
    pub resources: Vec<Property>,
}

impl Systemd {
    /// Connects to systemd: the system bus, else systemd's private socket.
    pub fn connect() -> Result<Self, CgroupError> {
        block_on(async {
            let connection = match zbus::Connection::system().await {
                Ok(c) => c,
                Err(bus) => {
                    tracing::debug!(error = %bus, "no system bus; trying systemd's private socket");
                    zbus::connection::Builder::address(PRIVATE_SOCKET)
                        .map(|b| b.p2p())
                        .map_err(|e| err("connect", "", e))?
                        .build()
                        .await
                        .map_err(|e| err("connect", "", e))?
                }
            };
            // Over the private socket there is no bus daemon; systemd answers whatever the
            // destination.
            let builder = ManagerProxy::builder(&connection);
            let manager = builder
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await
                .map_err(|e| err("connect", "", e))?;
            // systemd sends job signals only to clients that subscribed.
            manager
                .subscribe()
                .await
                .map_err(|e| err("Subscribe", "", e))?;
            // "252.33-1~deb12u1" → 252; unknown → 0 (the oldest behaviour assumed).
            let version = manager.version().await.unwrap_or_default();
            let version = version
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Ok(Self { manager, version })
        })
    }

    /// systemd's version (252 for "252.33-1~deb12u1"; 0 when it did not say).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Starts `name` as a transient unit (mode `replace`) and waits for its job. A unit of that
    /// name left failed or inactive from an earlier run (`UnitExists`) is reset and the start
    /// retried once.
    pub fn start_transient_unit(
        &self,
        name: &str,
        unit: &TransientUnit,
    ) -> Result<(), CgroupError> {
        match self.start_once(name, unit) {
            Err(CgroupError::Systemd { source, .. }) if is_error(&source, "UnitExists") => {
                tracing::info!(unit = name, "unit exists from an earlier run; resetting it");
                self.reset_failed_unit(name)?;
                self.start_once(name, unit)
            }
            other => other,
        }
    }

    fn start_once(&self, name: &str, unit: &TransientUnit) -> Result<(), CgroupError> {
        let mut props: Vec<(&str, Value<'static>)> = vec![
            ("Description", Value::from(unit.description.clone())),
            // No ordering against shutdown targets: the container's life is the runtime's.
            ("DefaultDependencies", Value::from(false)),
        ];
        if !unit.slice.is_empty() {
            props.push(("Slice", Value::from(unit.slice.clone())));
        }
        if !unit.pids.is_empty() {
            props.push(("PIDs", Value::from(unit.pids.clone())));
        }
        if unit.delegate {
            props.push(("Delegate", Value::from(true)));
        }
        for accounting in [
            "MemoryAccounting",
            "CPUAccounting",
            "IOAccounting",
            "TasksAccounting",
        ] {
            props.push((accounting, Value::from(true)));
        }
        props.extend(unit.resources.iter().map(to_dbus));
        let aux: &[(&str, &[(&str, Value<'_>)])] = &[];
        self.job("start", name, async {
            self.manager
                .start_transient_unit(name, "replace", &props, aux)
                .await
        })
    }

    /// Changes the resource properties of a running unit (not persisted: `runtime`).
    pub fn set_unit_properties(
        &self,
        name: &str,
        resources: &[Property],
    ) -> Result<(), CgroupError> {
        if resources.is_empty() {
            return Ok(());
        }
        let props: Vec<(&str, Value<'_>)> = resources.iter().map(to_dbus).collect();
        block_on(self.manager.set_unit_properties(name, true, &props))
            .map_err(|e| err("SetUnitProperties", name, e))
    }

    /// Stops `name` and waits for the job; a unit systemd does not know is already stopped.
    pub fn stop_unit(&self, name: &str) -> Result<(), CgroupError> {
        match self.job("stop", name, self.manager.stop_unit(name, "replace")) {
            Err(CgroupError::Systemd { source, .. }) if is_error(&source, "NoSuchUnit") => Ok(()),
            other => other,
        }
    }

    /// Forgets a failed unit (so that its name can be used again); a unit that is not loaded or
    /// not failed is fine.
    pub fn reset_failed_unit(&self, name: &str) -> Result<(), CgroupError> {
        match block_on(self.manager.reset_failed_unit(name)) {
            Ok(()) => Ok(()),
            Err(e) if is_error(&e, "NoSuchUnit") => Ok(()),
            Err(e) => Err(err("ResetFailedUnit", name, e)),
        }
    }

    /// Whether systemd has the unit loaded.
    pub fn unit_loaded(&self, name: &str) -> Result<bool, CgroupError> {
        match block_on(self.manager.get_unit(name)) {
            Ok(_) => Ok(true),
            Err(e) if is_error(&e, "NoSuchUnit") => Ok(false),
            Err(e) => Err(err("GetUnit", name, e)),
        }
    }

    /// Runs `call`, which queues a job, and waits (bounded) for systemd's `JobRemoved` of that
    /// job; anything but "done" is an error naming systemd's result.
    fn job(
        &self,
        op: &'static str,
        name: &str,
        call: impl Future<Output = zbus::Result<OwnedObjectPath>>,
    ) -> Result<(), CgroupError> {
        let method = if op == "start" {
            "StartTransientUnit"
        } else {
            "StopUnit"
        };
        block_on(async {
            // Listen before asking: the job can end before the call's reply is read.
            let mut removed = self
                .manager
                .receive_job_removed()
                .await
                .map_err(|e| err("JobRemoved subscription", name, e))?;
            let job = call.await.map_err(|e| err(method, name, e))?;
            let wait = async {
                while let Some(signal) = removed.next().await {
                    let Ok(args) = signal.args() else { continue };
                    if args.job.as_str() == job.as_str() {
                        return Some(args.result.to_owned());
                    }
                }
                None
            };
            let timeout = async_io::Timer::after(JOB_TIMEOUT);
            futures_util::pin_mut!(wait);
            let result = match future::select(wait, timeout).await {
                future::Either::Left((Some(result), _)) => result,
                future::Either::Left((None, _)) => "no answer (the connection closed)".to_owned(),
                future::Either::Right(_) => {
                    format!("no answer within {} s", JOB_TIMEOUT.as_secs())
                }
            };
            if result == "done" {
                Ok(())
            } else {
                Err(CgroupError::SystemdJob {
                    op,
                    unit: name.to_owned(),
                    result,
                })
            }
        })
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    zbus::block_on(f)
}

fn to_dbus(p: &Property) -> (&'static str, Value<'static>) {
    let value = match &p.value {
        PropertyValue::U64(v) => Value::from(*v),
        PropertyValue::Bytes(b) => Value::from(b.clone()),
        PropertyValue::Str(v) => Value::from(*v),
    };
    (p.name, value)
}

fn err(op: &'static str, unit: &str, source: zbus::Error) -> CgroupError {
    CgroupError::Systemd {
        op,
        unit: unit.to_owned(),
        source: Box::new(source),
    }
}

/// Whether `e` is systemd's D-Bus error `org.freedesktop.systemd1.<name>`.
fn is_error(e: &zbus::Error, name: &str) -> bool {
    match e {
        zbus::Error::MethodError(error_name, _, _) => error_name
            .as_str()
            .strip_prefix("org.freedesktop.systemd1.")
            .is_some_and(|n| n == name),
        _ => false,
    }
}
