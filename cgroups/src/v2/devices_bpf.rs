//! cgroup v2 device control: the OCI device rules compiled to a BPF_PROG_TYPE_CGROUP_DEVICE
//! program (like runc's devicefilter and youki's v2/devices), loaded and attached with bpf(2).
//!
//! The program sees `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! where access_type = (access << 16) | type, and returns 1 to allow, 0 to deny.
//!
//! Semantics, matching cgroup v1's: rules apply in order and the last matching rule wins, so the
//! program tests them from last to first; nothing matching means deny. An allow rule matches a
//! request whose access bits are all in the rule's; a deny rule matches a request that asks for
//! any of the rule's access bits.
//!
//! ```text
//!   r2 = ctx->access_type & 0xffff     // type
//!   r3 = ctx->access_type >> 16        // access
//!   r4 = ctx->major; r5 = ctx->minor
//!   for each rule, last first:         // jumps go to the next rule's block
//!     if r2 != TYPE goto next          // unless type "a"
//!     w1 = w3 & ACCESS; allow: if r1 != r3 goto next / deny: if r1 == 0 goto next  // unless "rwm"
//!     if r4 != MAJOR goto next; if r5 != MINOR goto next                          // unless "*"
//!     r0 = allow; exit
//!   r0 = 0; exit
//! ```

use std::path::Path;

use crate::devices::{DeviceKind, DeviceRule};
use crate::CgroupError;

/// One eBPF instruction, laid out as `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    /// Jump offset or memory offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

/// Opcodes of the subset the device filter uses.
pub mod op {
    /// BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off).
    pub const LDX_W: u8 = 0x61;
    /// BPF_ALU | BPF_AND | BPF_K: w_dst &= imm.
    pub const AND32_K: u8 = 0x54;
    /// BPF_ALU | BPF_RSH | BPF_K: w_dst >>= imm.
    pub const RSH32_K: u8 = 0x74;
    /// BPF_ALU | BPF_MOV | BPF_X: w_dst = w_src.
    pub const MOV32_X: u8 = 0xbc;
    /// BPF_ALU64 | BPF_MOV | BPF_K: dst = imm.
    pub const MOV64_K: u8 = 0xb7;
    /// BPF_JMP | BPF_JNE | BPF_K: if dst != imm goto +off.
    pub const JNE_K: u8 = 0x55;
    /// BPF_JMP | BPF_JNE | BPF_X: if dst != src goto +off.
    pub const JNE_X: u8 = 0x5d;
    /// BPF_JMP | BPF_JEQ | BPF_K: if dst == imm goto +off.
    pub const JEQ_K: u8 = 0x15;
    /// BPF_JMP | BPF_EXIT.
    pub const EXIT: u8 = 0x95;
}

/// `bpf_cgroup_dev_ctx` type values.
pub const DEV_BLOCK: u32 = 1;
/// Character device.
pub const DEV_CHAR: u32 = 2;
/// `bpf_cgroup_dev_ctx` access bits.
pub const ACC_MKNOD: u32 = 1;
/// Read.
pub const ACC_READ: u32 = 2;
/// Write.
pub const ACC_WRITE: u32 = 4;

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    /// Destination register.
    pub fn dst(&self) -> usize {
        usize::from(self.regs & 0x0f)
    }

    /// Source register.
    pub fn src(&self) -> usize {
        usize::from(self.regs >> 4)
    }
}

/// Compiles `rules` (in OCI order) into the filter program.
pub fn program(rules: &[DeviceRule]) -> Result<Vec<Insn>, CgroupError> {
    let mut p = vec![
        Insn::new(op::LDX_W, 2, 1, 0, 0),
        Insn::new(op::AND32_K, 2, 0, 0, 0xffff),
        Insn::new(op::LDX_W, 3, 1, 0, 0),
        Insn::new(op::RSH32_K, 3, 0, 0, 16),
        Insn::new(op::LDX_W, 4, 1, 4, 0),
        Insn::new(op::LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let block = rule_block(rule)?;
        let unconditional = block.len() == 2;
        p.extend(block);
        if unconditional {
            // Rules before one that matches everything can never be reached.
            return Ok(p);
        }
    }
    p.push(Insn::new(op::MOV64_K, 0, 0, 0, 0));
    p.push(Insn::new(op::EXIT, 0, 0, 0, 0));
    Ok(p)
}

fn number(rule: &DeviceRule, n: u32) -> Result<i32, CgroupError> {
    i32::try_from(n).map_err(|_| CgroupError::InvalidDeviceRule {
        rule: rule.to_string(),
        reason: "device number too large for the device filter",
    })
}

/// The instructions of one rule; conditional jumps go just past the block.
fn rule_block(rule: &DeviceRule) -> Result<Vec<Insn>, CgroupError> {
    // (opcode, dst, src, imm) of the conditions; offsets are filled in at the end.
    let mut conds: Vec<Vec<(u8, u8, u8, i32)>> = Vec::new();
    match rule.kind {
        DeviceKind::All => {}
        DeviceKind::Block => conds.push(vec![(op::JNE_K, 2, 0, DEV_BLOCK as i32)]),
        DeviceKind::Char => conds.push(vec![(op::JNE_K, 2, 0, DEV_CHAR as i32)]),
    }
    if !rule.access.is_all() {
        let mut bits = 0u32;
        for (on, bit) in [
            (rule.access.read, ACC_READ),
            (rule.access.write, ACC_WRITE),
            (rule.access.mknod, ACC_MKNOD),
        ] {
            if on {
                bits |= bit;
            }
        }
        let test = if rule.allow {
            (op::JNE_X, 1, 3, 0)
        } else {
            (op::JEQ_K, 1, 0, 0)
        };
        conds.push(vec![
            (op::MOV32_X, 1, 3, 0),
            (op::AND32_K, 1, 0, bits as i32),
            test,
        ]);
    }
    if let Some(major) = rule.major {
        conds.push(vec![(op::JNE_K, 4, 0, number(rule, major)?)]);
    }
    if let Some(minor) = rule.minor {
        conds.push(vec![(op::JNE_K, 5, 0, number(rule, minor)?)]);
    }
    let flat: Vec<(u8, u8, u8, i32)> = conds.into_iter().flatten().collect();
    let len = flat.len() + 2;
    let mut block: Vec<Insn> = flat
        .into_iter()
        .enumerate()
        .map(|(i, (code, dst, src, imm))| {
            let is_jump = matches!(code, op::JNE_K | op::JNE_X | op::JEQ_K);
            // Jump to `len` (just past this block), relative to the next instruction.
            let off = if is_jump { (len - i - 1) as i16 } else { 0 };
            Insn::new(code, dst, src, off, imm)
        })
        .collect();
    block.push(Insn::new(op::MOV64_K, 0, 0, 0, i32::from(rule.allow)));
    block.push(Insn::new(op::EXIT, 0, 0, 0, 0));
    Ok(block)
}

/// Compiles `rules` and makes the result the only device filter of the cgroup2 directory `dir`
/// (attach the new program with BPF_F_ALLOW_MULTI, then detach the ones attached before, so the
/// cgroup is never unfiltered — runc's order).
pub fn set_device_filter(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let prog = program(rules)?;
    super::bpf_syscall::replace_device_filter(dir, &prog)
}

#[cfg(test)]
#[path = "devices_bpf_tests.rs"]
mod tests;
