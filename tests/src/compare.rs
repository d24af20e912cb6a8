//! Differential checks: the same bundle under berth-runtime and under runc.

use std::fmt::Debug;

use crate::bundle::Bundle;
use crate::command::Outcome;
use crate::runtime::Runtime;

/// Asserts that berth-runtime and runc gave the same `what`.
#[track_caller]
pub fn same<T: PartialEq + Debug>(what: &str, berth: T, runc: T) {
    assert_eq!(
        berth, runc,
        "{what} differs: left = berth-runtime, right = runc"
    );
}

/// Runs `bundle` in the foreground under both runtimes: (berth, runc) outcomes.
#[track_caller]
pub fn run_both(tag: &str, bundle: &Bundle) -> (Outcome, Outcome) {
    let b = Runtime::berth();
    let r = Runtime::runc();
    (b.run_new(tag, bundle), r.run_new(tag, bundle))
}

/// Runs `bundle` in the foreground under both runtimes and asserts the same exit code and the
/// same stdout; returns berth's outcome.
#[track_caller]
pub fn run_both_same(tag: &str, bundle: &Bundle) -> Outcome {
    let (b, r) = run_both(tag, bundle);
    assert_eq!(
        (b.code, b.out()),
        (r.code, r.out()),
        "exit code and stdout differ\nberth-runtime: {b:?}\nrunc: {r:?}"
    );
    b
}
