//! A keyed pseudo-random permutation of `[0, n)` for any `n` from 1 to 2^62.
//!
//! This is Black and Rogaway's FE2 generalised Feistel cipher ("Ciphers with
//! arbitrary finite domains", CT-RSA 2002), as masscan's *blackrock* uses it:
//! the domain is the grid `Z_a x Z_b` with `a*b >= n` and `a, b` close to
//! `sqrt(n)`, each round adds a keyed hash of one half to the other modulo its
//! size, and *cycle walking* maps the few values `>= n` back into the domain.
//! Since `a*b - n < a + b`, cycle walking is needed for a fraction of about
//! `2/sqrt(n)` of the inputs: next to nothing for real sweeps.
//!
//! The round function only has to spread load across hosts, not resist
//! cryptanalysis: a multiply of the half mixed with a round key. Reductions modulo `a` and `b` use a
//! multiply-shift (Lemire's "fastrange") and a conditional subtraction, so a
//! round costs no division.

use strength_reduce::StrengthReducedU64;

/// The largest domain a permutation accepts.
pub const MAX_DOMAIN: u64 = 1 << 62;

/// Three rounds: a pseudo-random permutation in the Luby-Rackoff sense, which
/// is more than spreading load needs; each further round costs ~1.5 ns a probe.
const ROUNDS: usize = 3;

/// A keyed bijection of `[0, n)`.
#[derive(Debug, Clone, Copy)]
pub struct Permutation {
    n: u64,
    a: u64,
    b: u64,
    a_div: StrengthReducedU64,
    keys: [u64; ROUNDS],
}

/// SplitMix64: derives round keys from a seed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline(always)]
fn round_hash(x: u64, key: u64) -> u64 {
    // A multiply carries every input bit into the high bits of the product,
    // and the multiply-shift reduction below reads exactly those; the rotate
    // lets the key's high half reach the low input bits too.
    (x ^ key).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(7) ^ key.rotate_left(32)
}

/// `(l + hash mod m) mod m` for `l < m`, without a division.
#[inline(always)]
fn add_mod(l: u64, hash: u64, m: u64) -> u64 {
    let r = ((u128::from(hash) * u128::from(m)) >> 64) as u64;
    let s = l + r;
    if s >= m { s - m } else { s }
}

/// `(l - hash mod m) mod m` for `l < m`: the inverse of [`add_mod`].
#[inline(always)]
fn sub_mod(l: u64, hash: u64, m: u64) -> u64 {
    let r = ((u128::from(hash) * u128::from(m)) >> 64) as u64;
    if l >= r { l - r } else { l + m - r }
}

impl Permutation {
    /// A permutation of `[0, n)` keyed by `seed`. `n` is clamped to
    /// `1..=MAX_DOMAIN`; callers check sizes first (see [`MAX_DOMAIN`]).
    pub fn new(n: u64, seed: u64) -> Self {
        let n = n.clamp(1, MAX_DOMAIN);
        let mut a = n.isqrt();
        if a * a < n {
            a += 1;
        }
        let b = n.div_ceil(a);
        let mut state = seed;
        let keys = std::array::from_fn(|_| splitmix64(&mut state));
        Permutation {
            n,
            a,
            b,
            a_div: StrengthReducedU64::new(a),
            keys,
        }
    }

    /// The domain size `n`.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Never true: the smallest domain has one element.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// One pass of FE2 over `[0, a*b)`.
    #[inline(always)]
    fn encrypt_once(&self, m: u64) -> u64 {
        let (q, r) = StrengthReducedU64::div_rem(m, self.a_div);
        self.encrypt_split(r, q)
    }

    /// FE2 of `a*r + l` (`l < a`, `r < b`), given already split.
    #[inline(always)]
    fn encrypt_split(&self, mut l: u64, mut r: u64) -> u64 {
        for (j, &key) in self.keys.iter().enumerate() {
            let modulus = if j.is_multiple_of(2) { self.a } else { self.b };
            let t = add_mod(l, round_hash(r, key), modulus);
            l = r;
            r = t;
        }
        // After an even number of rounds l < a, r < b; after an odd one, l < b, r < a.
        if ROUNDS.is_multiple_of(2) {
            self.a * r + l
        } else {
            self.a * l + r
        }
    }

    #[inline(always)]
    fn decrypt_once(&self, c: u64) -> u64 {
        let (q, rem) = StrengthReducedU64::div_rem(c, self.a_div);
        let (mut l, mut r) = if ROUNDS.is_multiple_of(2) {
            (rem, q)
        } else {
            (q, rem)
        };
        for (j, &key) in self.keys.iter().enumerate().rev() {
            let modulus = if j.is_multiple_of(2) { self.a } else { self.b };
            let t = sub_mod(r, round_hash(l, key), modulus);
            r = l;
            l = t;
        }
        self.a * r + l
    }

    /// The image of `x` (`x < n`).
    #[inline]
    pub fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < self.n);
        let mut y = self.encrypt_once(x);
        while y >= self.n {
            y = self.encrypt_once(y);
        }
        y
    }

    /// The images of `start, start + stride, start + 2*stride, ...`, one per
    /// slot of `out` (all of them `< n`). The senders' hot path: the input is
    /// split into its FE2 halves once and then stepped, which saves a
    /// division per value.
    #[inline]
    pub fn apply_strided(&self, start: u64, stride: u64, out: &mut [u64]) {
        let (mut r, mut l) = StrengthReducedU64::div_rem(start, self.a_div);
        let (step_r, step_l) = StrengthReducedU64::div_rem(stride, self.a_div);
        for slot in out {
            debug_assert!(self.a * r + l < self.n);
            let mut y = self.encrypt_split(l, r);
            while y >= self.n {
                y = self.encrypt_once(y);
            }
            *slot = y;
            l += step_l;
            r += step_r;
            if l >= self.a {
                l -= self.a;
                r += 1;
            }
        }
    }

    /// The preimage of `y` (`y < n`): `invert(apply(x)) == x`.
    pub fn invert(&self, y: u64) -> u64 {
        debug_assert!(y < self.n);
        let mut x = self.decrypt_once(y);
        while x >= self.n {
            x = self.decrypt_once(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assert_bijection(n: u64, seed: u64) {
        let p = Permutation::new(n, seed);
        let mut seen = vec![false; n as usize];
        for x in 0..n {
            let y = p.apply(x);
            assert!(y < n, "n={n} seed={seed}: {x} -> {y} out of range");
            assert!(!seen[y as usize], "n={n} seed={seed}: {y} hit twice");
            seen[y as usize] = true;
            assert_eq!(p.invert(y), x, "n={n} seed={seed}: inverse of {y}");
        }
    }

    #[test]
    fn bijection_for_every_small_size() {
        for n in 1..=600 {
            assert_bijection(n, n * 7919);
        }
    }

    #[test]
    fn bijection_for_primes_and_powers_of_two_neighbours() {
        let primes = [65_521, 65_537, 104_729, 1_000_003];
        for &n in &primes {
            assert_bijection(n, 42);
        }
        for k in 1..=20 {
            for n in [(1u64 << k) - 1, 1 << k, (1 << k) + 1] {
                assert_bijection(n, k);
            }
        }
        // One full port range of one host, and a few hosts of it.
        assert_bijection(65_535, 1);
        assert_bijection(3 * 65_535, 2);
    }

    #[test]
    fn seeds_give_different_orders() {
        let (p, q) = (Permutation::new(10_000, 1), Permutation::new(10_000, 2));
        let same = (0..10_000).filter(|&x| p.apply(x) == q.apply(x)).count();
        assert!(same < 20, "{same} fixed points shared");
        // Not the identity either.
        assert!((0..10_000).filter(|&x| p.apply(x) == x).count() < 20);
    }

    #[test]
    fn order_spreads_load_across_hosts() {
        // 256 hosts x 65535 ports: the first 256 * 64 probes touch every host
        // about 64 times; none gets more than twice its share.
        let ports = 65_535u64;
        let p = Permutation::new(256 * ports, 9);
        let mut per_host = [0u32; 256];
        for x in 0..256 * 64 {
            per_host[(p.apply(x) / ports) as usize] += 1;
        }
        assert!(
            per_host.iter().all(|&c| (16..=128).contains(&c)),
            "{per_host:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn strided_matches_single(n in 1u64..1_000_000, seed: u64, start in any::<u64>(), stride in 1u64..5_000, len in 0usize..100) {
            let p = Permutation::new(n, seed);
            let start = start % n;
            let len = len.min(((n - start - 1) / stride + 1) as usize);
            let mut out = vec![0; len];
            p.apply_strided(start, stride, &mut out);
            for (i, y) in out.iter().enumerate() {
                prop_assert_eq!(*y, p.apply(start + i as u64 * stride));
            }
        }

        #[test]
        fn bijection_for_random_small_sizes(n in 1u64..5_000, seed: u64) {
            assert_bijection(n, seed);
        }

        /// Above 2^32 the space cannot be walked; sampled points must stay in
        /// range and invert exactly, which makes the map injective there.
        #[test]
        fn inverts_on_huge_sizes(n in (1u64 << 32)..=MAX_DOMAIN, seed: u64, xs in proptest::collection::vec(any::<u64>(), 64)) {
            let p = Permutation::new(n, seed);
            for x in xs {
                let x = x % n;
                let y = p.apply(x);
                prop_assert!(y < n);
                prop_assert_eq!(p.invert(y), x);
            }
        }
    }
}
