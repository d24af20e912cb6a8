//! The device filter's behaviour, checked by running the emitted instructions in a tiny
//! interpreter of exactly the subset the generator may use (anything else panics).

use super::*;
use crate::devices::DeviceAccess;

const CTX: u64 = 0xC7C7_0000;

/// Runs `prog` on a device request; returns r0.
fn run(prog: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
    let ctx = [(access << 16) | kind, major, minor];
    let mut r = [0u64; 11];
    let mut written = [false; 11];
    r[1] = CTX;
    written[1] = true;
    written[10] = true;
    let mut pc: usize = 0;
    for _ in 0..10_000 {
        let i = *prog.get(pc).expect("pc stays inside the program");
        pc += 1;
        let (d, s) = (i.dst(), i.src());
        assert!(d <= 10 && s <= 10, "register out of range at {}", pc - 1);
        let jump = |cond: bool, pc: &mut usize| {
            if cond {
                let target = *pc as i64 + i64::from(i.off);
                assert!(
                    target > 0 && (target as usize) < prog.len(),
                    "jump out of program"
                );
                *pc = target as usize;
            }
        };
        match i.code {
            op::LDX_W => {
                assert_eq!(r[s], CTX, "loads only from the context");
                assert!(
                    i.off >= 0 && i.off % 4 == 0 && i.off < 12,
                    "aligned ctx load"
                );
                r[d] = u64::from(ctx[i.off as usize / 4]);
                written[d] = true;
            }
            op::AND32_K => {
                assert!(written[d]);
                r[d] = u64::from((r[d] as u32) & (i.imm as u32));
            }
            op::RSH32_K => {
                assert!(written[d]);
                r[d] = u64::from((r[d] as u32) >> i.imm);
            }
            op::MOV32_X => {
                assert!(written[s]);
                r[d] = u64::from(r[s] as u32);
                written[d] = true;
            }
            op::MOV64_K => {
                r[d] = i64::from(i.imm) as u64;
                written[d] = true;
            }
            op::JNE_K => {
                assert!(written[d]);
                jump(r[d] != i64::from(i.imm) as u64, &mut pc);
            }
            op::JEQ_K => {
                assert!(written[d]);
                jump(r[d] == i64::from(i.imm) as u64, &mut pc);
            }
            op::JNE_X => {
                assert!(written[d] && written[s]);
                jump(r[d] != r[s], &mut pc);
            }
            op::EXIT => {
                assert!(written[0], "r0 set before exit");
                return r[0];
            }
            other => panic!("opcode {other:#x} outside the device filter subset"),
        }
    }
    panic!("program did not terminate")
}

const R: u32 = ACC_READ;
const W: u32 = ACC_WRITE;
const M: u32 = ACC_MKNOD;
const C: u32 = DEV_CHAR;
const B: u32 = DEV_BLOCK;

fn access(s: &str) -> DeviceAccess {
    DeviceAccess {
        read: s.contains('r'),
        write: s.contains('w'),
        mknod: s.contains('m'),
    }
}

fn rule(
    allow: bool,
    kind: DeviceKind,
    major: Option<u32>,
    minor: Option<u32>,
    a: &str,
) -> DeviceRule {
    DeviceRule {
        allow,
        kind,
        major,
        minor,
        access: access(a),
    }
}

/// What runc's default spec and the Kubernetes defaults give a container.
fn default_container_rules() -> Vec<DeviceRule> {
    use DeviceKind::*;
    vec![
        rule(false, All, None, None, "rwm"),
        rule(true, Char, None, None, "m"),
        rule(true, Block, None, None, "m"),
        rule(true, Char, Some(1), Some(3), "rwm"),
        rule(true, Char, Some(1), Some(5), "rwm"),
        rule(true, Char, Some(1), Some(8), "rwm"),
        rule(true, Char, Some(5), Some(0), "rwm"),
        rule(true, Char, Some(136), None, "rwm"),
        rule(true, Char, Some(5), Some(2), "rwm"),
        rule(true, Char, Some(10), Some(200), "rwm"),
    ]
}

#[test]
fn default_container_rules_behave() {
    let p = program(&default_container_rules()).unwrap();
    assert_eq!(run(&p, C, R | W, 1, 3), 1, "/dev/null rw");
    assert_eq!(run(&p, C, R, 1, 5), 1, "/dev/zero r");
    assert_eq!(run(&p, C, R | W, 136, 7), 1, "/dev/pts/7");
    assert_eq!(run(&p, C, R | W, 10, 200), 1, "/dev/net/tun");
    assert_eq!(run(&p, C, M, 4, 1), 1, "mknod of any char device");
    assert_eq!(run(&p, B, M, 8, 0), 1, "mknod of any block device");
    assert_eq!(run(&p, B, R, 8, 0), 0, "read /dev/sda");
    assert_eq!(run(&p, C, R | W, 1, 1), 0, "/dev/mem");
    assert_eq!(run(&p, C, R | W, 4, 1), 0, "/dev/tty1");
    assert_eq!(run(&p, C, W, 10, 1), 0);
}

#[test]
fn no_rules_deny_everything_and_allow_all_allows_everything() {
    let p = program(&[]).unwrap();
    for (k, a) in [(C, R), (B, W), (C, M)] {
        assert_eq!(run(&p, k, a, 1, 3), 0);
    }
    let p = program(&[rule(true, DeviceKind::All, None, None, "rwm")]).unwrap();
    assert_eq!(p.len(), 8, "prologue + r0=1 + exit");
    for (k, a) in [(C, R), (B, W | R), (C, M)] {
        assert_eq!(run(&p, k, a, 259, 1), 1);
    }
}

#[test]
fn last_matching_rule_wins() {
    use DeviceKind::*;
    let p = program(&[
        rule(true, All, None, None, "rwm"),
        rule(false, Block, Some(8), Some(0), "rwm"),
    ])
    .unwrap();
    assert_eq!(run(&p, B, R, 8, 0), 0);
    assert_eq!(run(&p, B, R, 8, 1), 1);
    assert_eq!(
        run(&p, C, R, 8, 0),
        1,
        "the deny rule is for block devices only"
    );
    let p = program(&[
        rule(true, Char, Some(1), Some(3), "rwm"),
        rule(false, Char, Some(1), None, "rwm"),
    ])
    .unwrap();
    assert_eq!(run(&p, C, R, 1, 3), 0, "a later wildcard deny overrides");
    // A rule after an allow-all shadows nothing: rules before an unconditional one are dropped.
    let p = program(&[
        rule(false, Char, Some(1), Some(3), "rwm"),
        rule(true, All, None, None, "rwm"),
    ])
    .unwrap();
    assert_eq!(p.len(), 8);
    assert_eq!(run(&p, C, R, 1, 3), 1);
}

#[test]
fn access_subsets() {
    use DeviceKind::*;
    // allow r only: rw is not a subset of r.
    let p = program(&[rule(true, Char, Some(1), Some(3), "r")]).unwrap();
    assert_eq!(run(&p, C, R, 1, 3), 1);
    assert_eq!(run(&p, C, R | W, 1, 3), 0);
    assert_eq!(run(&p, C, W, 1, 3), 0);
    assert_eq!(run(&p, C, M, 1, 3), 0);
    // allow rwm then deny w: writes (alone or with reads) are denied, reads are not.
    let p = program(&[
        rule(true, Char, Some(1), Some(3), "rwm"),
        rule(false, Char, Some(1), Some(3), "w"),
    ])
    .unwrap();
    assert_eq!(run(&p, C, R, 1, 3), 1);
    assert_eq!(run(&p, C, M, 1, 3), 1);
    assert_eq!(run(&p, C, W, 1, 3), 0);
    assert_eq!(run(&p, C, R | W, 1, 3), 0);
}

#[test]
fn wildcards_per_field() {
    use DeviceKind::*;
    let p = program(&[rule(true, Char, None, Some(3), "rwm")]).unwrap();
    assert_eq!(run(&p, C, R, 1, 3), 1);
    assert_eq!(run(&p, C, R, 7, 3), 1);
    assert_eq!(run(&p, C, R, 7, 4), 0);
    assert_eq!(run(&p, B, R, 7, 3), 0);
    let p = program(&[rule(true, All, Some(7), None, "rwm")]).unwrap();
    assert_eq!(run(&p, B, R, 7, 9), 1);
    assert_eq!(run(&p, C, W, 7, 0), 1);
    assert_eq!(run(&p, C, W, 8, 0), 0);
}

#[test]
fn exact_instructions_of_one_rule() {
    let p = program(&[rule(true, DeviceKind::Char, Some(1), Some(3), "rw")]).unwrap();
    let listing: Vec<(u8, usize, usize, i16, i32)> = p
        .iter()
        .map(|i| (i.code, i.dst(), i.src(), i.off, i.imm))
        .collect();
    assert_eq!(
        listing,
        vec![
            (op::LDX_W, 2, 1, 0, 0),
            (op::AND32_K, 2, 0, 0, 0xffff),
            (op::LDX_W, 3, 1, 0, 0),
            (op::RSH32_K, 3, 0, 0, 16),
            (op::LDX_W, 4, 1, 4, 0),
            (op::LDX_W, 5, 1, 8, 0),
            // rule block: 6 tests, then r0 = 1; exit. Jumps land on index 14.
            (op::JNE_K, 2, 0, 7, 2),
            (op::MOV32_X, 1, 3, 0, 0),
            (op::AND32_K, 1, 0, 0, 6),
            (op::JNE_X, 1, 3, 4, 0),
            (op::JNE_K, 4, 0, 3, 1),
            (op::JNE_K, 5, 0, 2, 3),
            (op::MOV64_K, 0, 0, 0, 1),
            (op::EXIT, 0, 0, 0, 0),
            (op::MOV64_K, 0, 0, 0, 0),
            (op::EXIT, 0, 0, 0, 0),
        ]
    );
    assert_eq!(std::mem::size_of::<Insn>(), 8, "struct bpf_insn layout");
}

#[test]
fn huge_device_numbers_are_rejected() {
    let r = rule(true, DeviceKind::Char, Some(u32::MAX), None, "r");
    assert!(matches!(
        program(&[r]),
        Err(CgroupError::InvalidDeviceRule { .. })
    ));
}
