//! Instruction-set levels and their run-time detection.

/// A kernel implementation level. Each level builds on its [`Isa::base`] and requires what the
/// base requires; `ALL` lists them from least to most preferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, written so the compiler can vectorise it; every architecture.
    Scalar,
    /// x86_64 AVX2 + FMA + F16C (Haswell, Zen 1 and later).
    Avx2,
    /// AVX2 plus AVX-VNNI, the 256-bit `vpdpbusd` without AVX-512 (Intel client CPUs since
    /// Alder Lake, Zen 5). CPUs with AVX-512 VNNI need not have it (Zen 4, Ice Lake), so it is
    /// a sibling of `Avx512` on top of `Avx2`, not a step below it.
    AvxVnni,
    /// x86_64 AVX-512 F/BW/VL + VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later).
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512 => "avx512",
        }
    }

    /// The level this one adds kernels to (`None` for scalar, the root).
    pub fn base(self) -> Option<Isa> {
        match self {
            Isa::Scalar => None,
            Isa::Avx2 => Some(Isa::Scalar),
            Isa::AvxVnni | Isa::Avx512 => Some(Isa::Avx2),
        }
    }

    /// This level and its bases, root first: the order in which their kernels are overlaid.
    pub fn chain(self) -> Vec<Isa> {
        let mut chain = vec![self];
        while let Some(base) = chain.last().and_then(|l| l.base()) {
            chain.push(base);
        }
        chain.reverse();
        chain
    }

    /// The level whose float code (attention, f32 GEMM) this level runs: AVX-VNNI adds integer
    /// dot products only, so its float paths are AVX2's.
    pub fn float_level(self) -> Isa {
        match self {
            Isa::AvxVnni => Isa::Avx2,
            other => other,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(name))
    }

    /// Whether this CPU (and OS) can run this level.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => {
                Isa::Avx2.is_available() && std::arch::is_x86_feature_detected!("avxvnni")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The highest level this CPU runs.
    pub fn best_available() -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Scalar)
    }
}

/// Whether AMX-INT8 tiles can really be used: the CPU advertises AMX-TILE and AMX-INT8
/// (CPUID.7.0:EDX bits 24 and 25), the kernel supports the tile-data state component
/// (`arch_prctl(ARCH_GET_XCOMP_SUPP)` has XTILEDATA, bit 18) and grants this process permission
/// (`ARCH_REQ_XCOMP_PERM`). A CPU that advertises AMX under a kernel without XTILEDATA support
/// faults on the first `ldtilecfg`, which is why the CPUID bits alone are not enough.
/// Lumen has no AMX kernels yet; this is reported so benchmarks say what the machine offers.
pub fn amx_usable() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // CPUID leaf 7 is only read when the CPU reports it exists.
        let max_leaf = std::arch::x86_64::__cpuid(0).eax;
        if max_leaf < 7 {
            return false;
        }
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        if !(tile && int8) {
            return false;
        }
        const ARCH_GET_XCOMP_SUPP: u64 = 0x1022;
        const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
        const XFEATURE_XTILEDATA: u64 = 18;
        let mut supported: u64 = 0;
        if arch_prctl(ARCH_GET_XCOMP_SUPP, &mut supported as *mut u64 as u64) != 0 {
            return false;
        }
        if supported & (1 << XFEATURE_XTILEDATA) == 0 {
            return false;
        }
        arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// The raw `arch_prctl` system call (number 158 on x86_64 Linux); returns 0 or −errno.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn arch_prctl(code: u64, arg: u64) -> i64 {
    let ret: i64;
    // SAFETY: arch_prctl with these codes only reads `code` and writes through `arg` when it is
    // a pointer to a u64 we own (ARCH_GET_XCOMP_SUPP); it does not touch other memory.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") 158i64 => ret,
            in("rdi") code,
            in("rsi") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_never_faults_and_levels_are_ordered() {
        // On this project's CI machine (AMD EPYC) AMX is absent; on a Sapphire Rapids host with
        // an old kernel the CPUID bits are set but XTILEDATA is not: both must answer, not fault.
        let _ = amx_usable();
        assert!(Isa::Scalar.is_available());
        let best = Isa::best_available();
        assert!(best.chain().iter().all(|l| l.is_available()));
        assert_eq!(Isa::Avx512.chain(), [Isa::Scalar, Isa::Avx2, Isa::Avx512]);
        assert_eq!(Isa::AvxVnni.chain(), [Isa::Scalar, Isa::Avx2, Isa::AvxVnni]);
        assert_eq!(Isa::from_name("AVX2"), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("avxvnni"), Some(Isa::AvxVnni));
        assert_eq!(Isa::from_name("neon"), None);
    }
}
