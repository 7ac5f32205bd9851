//! Coupon codes (API.md, "Coupon codes"): how policies hand out coupons by
//! code, what a code may look like, and the check character that refuses a
//! mistyped code before anything is looked up.
//!
//! A generated code is an optional prefix, ten characters drawn from an
//! alphabet without look-alikes (no 0/O, 1/I/L: 31 symbols, 49 random bits)
//! and one check character. The check makes the weighted sum of every
//! character's value (its place in `0-9A-Z`, weights 1, 2, 3, ... from the
//! left) a multiple of 37. 37 is prime and larger than both the 36 values and
//! the longest code, so a change of any one character, or a swap of any two
//! different ones, changes the sum by an amount that is not a multiple of 37,
//! and is always caught. The check character is drawn from the same alphabet, so a
//! draw whose required check falls outside it is drawn again (31 in 37 pass).

use crate::page::PageRequest;
use crate::{DomainError, DomainResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How a policy's coupons are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CodeMode {
    /// Issued to a user by policy id, with a code made at issue (v1).
    #[default]
    Generated,
    /// One public code; each redemption issues the caller a coupon.
    Shared,
    /// Unique single-use codes generated ahead.
    Batch,
}

impl CodeMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            CodeMode::Generated => "GENERATED",
            CodeMode::Shared => "SHARED",
            CodeMode::Batch => "BATCH",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "GENERATED" => Ok(CodeMode::Generated),
            "SHARED" => Ok(CodeMode::Shared),
            "BATCH" => Ok(CodeMode::Batch),
            _ => Err(DomainError::validation(
                "code_mode",
                "code_mode must be GENERATED, SHARED or BATCH",
            )),
        }
    }
}

/// A request for a batch of codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCodes {
    pub policy_id: Uuid,
    pub count: i64,
    pub prefix: Option<String>,
}

/// What a batch generation answers once every code is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeBatch {
    pub policy_id: Uuid,
    pub generated: i64,
    /// The policy's codes after this batch.
    pub total_codes: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CodeStatus {
    Unredeemed,
    Redeemed,
}

impl CodeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CodeStatus::Unredeemed => "UNREDEEMED",
            CodeStatus::Redeemed => "REDEEMED",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "UNREDEEMED" => Ok(CodeStatus::Unredeemed),
            "REDEEMED" => Ok(CodeStatus::Redeemed),
            _ => Err(DomainError::validation(
                "status",
                "status must be UNREDEEMED or REDEEMED",
            )),
        }
    }
}

/// One BATCH code of a policy, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub code: String,
    pub status: CodeStatus,
    pub coupon_id: Option<Uuid>,
    pub redeemed_at: Option<DateTime<Utc>>,
}

/// A page of one policy's codes, optionally of one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeQuery {
    pub policy_id: Uuid,
    pub status: Option<CodeStatus>,
    pub page: PageRequest,
}

/// A redemption of `code` for `user_id` (the caller, or whom an admin acts for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeem {
    pub code: String,
    pub user_id: Uuid,
}

/// What a typed code is before anything is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// Normalized, and its check character matches: look it up.
    Checked(String),
    /// Normalized, but no check character matches: only a shared code
    /// (which carries none) can be this; anything else is a typo.
    Unchecked(String),
}

/// Normalizes a typed code and reads its check character.
pub fn read_typed(input: &str) -> DomainResult<Typed> {
    let code = normalize(input)?;
    Ok(if check_matches(&code) {
        Typed::Checked(code)
    } else {
        Typed::Unchecked(code)
    })
}

/// The refusal of a code that is neither a shared code nor has a matching
/// check character.
pub fn mistyped() -> DomainError {
    DomainError::validation(
        "code",
        "code is mistyped: its check character does not match",
    )
}

/// The alphabet of generated characters: digits and letters without 0, 1,
/// I, L and O.
pub const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Random characters of a generated code (31^10 > 2^49).
pub const RANDOM_CHARS: usize = 10;
/// A batch's largest `count` and longest prefix (API.md).
pub const MAX_BATCH: i64 = 1_000_000;
pub const MAX_PREFIX: usize = 10;
/// Any code's length once normalized: a shared code's bounds, which hold
/// every generated one (prefix + 11).
pub const MIN_LEN: usize = 4;
pub const MAX_LEN: usize = 32;

const MODULUS: u32 = 37;

/// A character's value in the check sum: its place in `0-9A-Z`.
fn value(c: u8) -> u32 {
    match c {
        b'0'..=b'9' => (c - b'0') as u32,
        _ => (c - b'A') as u32 + 10,
    }
}

fn weighted_sum(code: &[u8]) -> u32 {
    code.iter()
        .enumerate()
        .map(|(i, &c)| (i as u32 + 1) * value(c))
        .sum::<u32>()
        % MODULUS
}

/// Whether a normalized code ends in its right check character.
pub fn check_matches(code: &str) -> bool {
    code.len() < MODULUS as usize && weighted_sum(code.as_bytes()) == 0
}

/// A code as users may type it: case-insensitive, hyphens and spaces
/// ignored. Anything else outside `A-Z 0-9`, or a length outside 4..=32,
/// is a `VALIDATION_ERROR` naming `code`.
pub fn normalize(input: &str) -> DomainResult<String> {
    let code: String = input
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !code.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(DomainError::validation(
            "code",
            "code may hold only letters, digits, hyphens and spaces",
        ));
    }
    if !(MIN_LEN..=MAX_LEN).contains(&code.len()) {
        return Err(DomainError::validation(
            "code",
            format!("code must be {MIN_LEN} to {MAX_LEN} characters"),
        ));
    }
    Ok(code)
}

/// A policy's shared code as given: 4-32 characters of `A-Z 0-9 -` (either
/// case). Returns it in upper case, the form coupons show.
pub fn validate_shared(code: &str) -> DomainResult<String> {
    let upper = code.to_ascii_uppercase();
    let ok_chars = upper
        .bytes()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-');
    let normalized_len = upper.bytes().filter(|c| *c != b'-').count();
    if !ok_chars || !(MIN_LEN..=MAX_LEN).contains(&upper.len()) || normalized_len < MIN_LEN {
        return Err(DomainError::validation(
            "shared_code",
            "shared_code must be 4 to 32 characters of A-Z, 0-9 and -",
        ));
    }
    Ok(upper)
}

/// A batch prefix: up to 10 characters of `A-Z 0-9` (either case), upper-cased.
pub fn validate_prefix(prefix: Option<&str>) -> DomainResult<String> {
    let p = prefix.unwrap_or_default().to_ascii_uppercase();
    if p.len() > MAX_PREFIX || !p.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(DomainError::validation(
            "prefix",
            "prefix must be at most 10 characters of A-Z and 0-9",
        ));
    }
    Ok(p)
}

/// A batch size: 1..=1,000,000, and the codes of a policy never more than
/// its `total_quantity`.
pub fn validate_count(count: i64, generated: i64, total: i64) -> DomainResult<()> {
    if !(1..=MAX_BATCH).contains(&count) {
        return Err(DomainError::validation(
            "count",
            format!("count must be between 1 and {MAX_BATCH}"),
        ));
    }
    if generated + count > total {
        return Err(DomainError::validation(
            "count",
            format!(
                "count must be at most {} (total_quantity {total}, codes already generated {generated})",
                (total - generated).max(0)
            ),
        ));
    }
    Ok(())
}

/// One generated code: `prefix` (already validated), ten random characters
/// and the check. `random` yields uniform u64s, from a CSPRNG in production.
pub fn generate(prefix: &str, mut random: impl FnMut() -> u64) -> String {
    let mut code = Vec::with_capacity(prefix.len() + RANDOM_CHARS + 1);
    loop {
        code.clear();
        code.extend_from_slice(prefix.as_bytes());
        // u64 % 31 is biased by under 2^-59 per character.
        code.extend(
            (0..RANDOM_CHARS).map(|_| ALPHABET[(random() % ALPHABET.len() as u64) as usize]),
        );
        let weight = code.len() as u32 + 1;
        let need = (MODULUS - weighted_sum(&code)) % MODULUS;
        // The check character c must give weight * value(c) = need (mod 37).
        let v = need * inverse(weight) % MODULUS;
        if let Some(&c) = ALPHABET.iter().find(|&&c| value(c) == v) {
            code.push(c);
            return String::from_utf8(code).expect("ascii");
        }
    }
}

/// The inverse of `w` modulo 37 (Fermat: w^35).
fn inverse(w: u32) -> u32 {
    let mut r = 1;
    for _ in 0..MODULUS - 2 {
        r = r * w % MODULUS;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            // splitmix64: deterministic and well mixed, for tests only.
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn generated_codes_check_and_avoid_look_alikes() {
        let mut r = seq(7);
        for _ in 0..1000 {
            let c = generate("", &mut r);
            assert_eq!(c.len(), RANDOM_CHARS + 1);
            assert!(check_matches(&c), "{c}");
            assert!(c.bytes().all(|b| ALPHABET.contains(&b)), "{c}");
            assert_eq!(normalize(&c).unwrap(), c);
        }
        let c = generate("SPRING10", &mut r);
        assert!(c.starts_with("SPRING10") && check_matches(&c));
    }

    #[test]
    fn normalizing_ignores_case_hyphens_and_spaces() {
        assert_eq!(normalize(" ab-cd 23-45 ").unwrap(), "ABCD2345");
        assert_eq!(normalize("ab!cd").unwrap_err().field(), Some("code"));
        assert_eq!(normalize("a-b-c").unwrap_err().field(), Some("code"));
        assert!(normalize(&"A".repeat(33)).is_err());
    }

    #[test]
    fn shared_codes_prefixes_and_counts_are_checked() {
        assert_eq!(validate_shared("spring-10").unwrap(), "SPRING-10");
        for bad in ["abc", "a---", "SPRING_10", &"A".repeat(33)] {
            assert_eq!(
                validate_shared(bad).unwrap_err().field(),
                Some("shared_code"),
                "{bad}"
            );
        }
        assert_eq!(validate_prefix(Some("ab12")).unwrap(), "AB12");
        assert_eq!(validate_prefix(None).unwrap(), "");
        assert!(validate_prefix(Some("TOO-LONG")).is_err());
        assert!(validate_prefix(Some("ABCDEFGHIJK")).is_err());
        assert!(validate_count(0, 0, 10).is_err());
        assert!(validate_count(MAX_BATCH + 1, 0, i64::MAX).is_err());
        assert!(validate_count(5, 5, 10).is_ok());
        assert_eq!(validate_count(6, 5, 10).unwrap_err().field(), Some("count"));
    }

    proptest! {
        /// Every single-character typo, to any letter or digit, is caught.
        #[test]
        fn any_one_typo_is_caught(seed: u64, prefix in "[A-Z0-9]{0,10}", pos: prop::sample::Index, to in "[A-Z0-9]") {
            let code = generate(&prefix, seq(seed));
            let i = pos.index(code.len());
            let to = to.as_bytes()[0];
            prop_assume!(code.as_bytes()[i] != to);
            let mut typo = code.clone().into_bytes();
            typo[i] = to;
            prop_assert!(!check_matches(std::str::from_utf8(&typo).unwrap()));
        }

        /// Swapping any two different characters is caught too.
        #[test]
        fn any_swap_is_caught(seed: u64, prefix in "[A-Z0-9]{0,10}", a: prop::sample::Index, b: prop::sample::Index) {
            let code = generate(&prefix, seq(seed)).into_bytes();
            let (i, j) = (a.index(code.len()), b.index(code.len()));
            prop_assume!(code[i] != code[j]);
            let mut swapped = code.clone();
            swapped.swap(i, j);
            prop_assert!(!check_matches(std::str::from_utf8(&swapped).unwrap()));
        }
    }

    /// The exhaustive form of the property over the generated alphabet: every
    /// position of one code, every other symbol of `0-9A-Z`.
    #[test]
    fn every_substitution_of_one_code_is_caught() {
        let code = generate("AB0", seq(42));
        for i in 0..code.len() {
            for to in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" {
                let mut typo = code.clone().into_bytes();
                if typo[i] == *to {
                    continue;
                }
                typo[i] = *to;
                assert!(!check_matches(std::str::from_utf8(&typo).unwrap()));
            }
        }
    }
}
