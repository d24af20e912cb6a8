//! The root gate: these tests need root (namespaces, mounts, cgroups). A test that cannot run
//! says so and returns; in CI (`CI=true`, or `BERTH_REQUIRE_ROOT_TESTS` set) it fails instead,
//! so that a skipped test is never counted as a pass there.

/// True when the test may run. Otherwise prints `skipped: <test> needs root (…)` and returns
/// false, or panics when CI insists that root tests run.
pub fn may_run(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if ci_requires_root() {
        panic!(
            "{test} needs root (namespaces, mounts, cgroups), and this is CI (CI=true or \
             BERTH_REQUIRE_ROOT_TESTS): run the tests as root"
        );
    }
    println!("skipped: {test} needs root (namespaces, mounts, cgroups)");
    false
}

fn ci_requires_root() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var_os("BERTH_REQUIRE_ROOT_TESTS").is_some_and(|v| !v.is_empty())
}

/// The path of the function this macro is expanded in (`lifecycle::create_start_state`).
#[macro_export]
macro_rules! function_name {
    () => {{
        fn f() {}
        fn name_of<T>(_: T) -> &'static str {
            ::std::any::type_name::<T>()
        }
        let n = name_of(f);
        n.strip_suffix("::f").unwrap_or(n)
    }};
}

/// Returns from the test (after saying why) unless it runs as root; fails under CI instead.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::root_gate::may_run($crate::function_name!()) {
            return;
        }
    };
}
