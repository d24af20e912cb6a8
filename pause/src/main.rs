//! berth-pause: the process that holds a pod sandbox's namespaces, like Kubernetes' pause.c.
//!
//! - SIGINT or SIGTERM: exit 0.
//! - SIGCHLD: reap every exited child (as PID 1 of the pod's PID namespace, orphans land here).
//! - Otherwise: sleep in `pause()`. Prints nothing, except `-v` prints the version.
//!
//! Linked statically (see build.rs) so it runs in an empty rootfs.

fn reap_children() {
    loop {
        // SAFETY: waitpid with a null status pointer and WNOHANG only reaps exited children.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

extern "C" fn on_down(_signo: libc::c_int) {
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(0) }
}

extern "C" fn on_child(_signo: libc::c_int) {
    reap_children(); // waitpid is async-signal-safe
}

fn install(signo: libc::c_int, handler: extern "C" fn(libc::c_int), flags: libc::c_int) -> bool {
    // SAFETY: an all-zero sigaction is a valid value (empty mask, no flags) before we fill it.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as libc::sighandler_t;
    action.sa_flags = flags;
    // SAFETY: `action` is initialised, the handlers only call async-signal-safe functions, and a
    // null old-action pointer is allowed.
    unsafe { libc::sigaction(signo, &action, std::ptr::null_mut()) == 0 }
}

fn main() {
    if std::env::args()
        .skip(1)
        .any(|a| a.eq_ignore_ascii_case("-v"))
    {
        println!("berth-pause {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    // Exit codes as pause.c's.
    if !install(libc::SIGINT, on_down, 0) {
        std::process::exit(1);
    }
    if !install(libc::SIGTERM, on_down, 0) {
        std::process::exit(2);
    }
    if !install(libc::SIGCHLD, on_child, libc::SA_NOCLDSTOP) {
        std::process::exit(3);
    }
    // Children that exited before the handler was in place sent a SIGCHLD nobody caught.
    reap_children();
    loop {
        // SAFETY: pause only sleeps until a signal handler has run.
        unsafe { libc::pause() };
    }
}
