//! Exact money: `Amount`, a signed fixed-point count of 10⁻⁸ currency units with a hard bound.
//!
//! Why fixed point in an `i128` (see `docs/adr/0001-money-representation.md`): arithmetic is one
//! or two machine instructions, comparison is exact, and with every value bounded by
//! [`AMOUNT_WHOLE_MAX`] = 10¹² whole units (10²⁰ minor units) the sum of any two amounts — and
//! even of a billion of them — stays far inside `i128`, so overflow is impossible by
//! construction. The bound is still enforced on every operation that produces an `Amount`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// Fractional digits an amount may carry. More is a validation error, never rounded away.
pub const AMOUNT_FRACTION_DIGITS_MAX: u32 = 8;
/// Minor units in one whole currency unit (10⁸).
const UNITS_PER_WHOLE: i128 = 100_000_000;
/// The largest magnitude, in whole currency units, that any amount, balance or limit may have.
pub const AMOUNT_WHOLE_MAX: i128 = 1_000_000_000_000;
/// The largest magnitude in minor units (10²⁰).
const UNITS_MAX: i128 = AMOUNT_WHOLE_MAX * UNITS_PER_WHOLE;
/// [`Amount::BITS`] ones.
const BITS_MASK: u128 = (1 << Amount::BITS) - 1;
/// Longest decimal text accepted for an amount, in bytes (sign, digits, point, exponent).
pub const AMOUNT_TEXT_BYTES_MAX: usize = 64;

/// Why a value is not a valid [`Amount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    #[error("more than {AMOUNT_FRACTION_DIGITS_MAX} fractional digits")]
    TooManyFractionDigits,
    #[error("magnitude above {AMOUNT_WHOLE_MAX}")]
    OutOfRange,
    #[error("not a decimal number")]
    Malformed,
}

/// A signed, exact amount of money in minor units of 10⁻⁸; always within ±10¹² whole units.
///
/// Arithmetic is on an `i128`, but the value is stored as two 8-byte halves: an `i128` field
/// is 16-byte aligned, which padded every struct holding an amount (accounts, history
/// entries, idempotency records: held by the million) to a multiple of 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Amount {
    low: u64,
    high: i64,
}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Amount) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Amount {
    #[inline]
    fn cmp(&self, other: &Amount) -> std::cmp::Ordering {
        self.units().cmp(&other.units())
    }
}

impl Amount {
    pub const ZERO: Amount = Amount::raw(0);
    /// The largest representable amount (10¹² whole units).
    pub const MAX: Amount = Amount::raw(UNITS_MAX);
    /// The smallest representable amount (−10¹² whole units).
    pub const MIN: Amount = Amount::raw(-UNITS_MAX);

    /// Unchecked: only for values known to be within the bound.
    #[inline]
    const fn raw(units: i128) -> Amount {
        let bytes = units.to_le_bytes();
        Amount {
            low: u64::from_le_bytes([
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
            ]),
            high: i64::from_le_bytes([
                bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14],
                bytes[15],
            ]),
        }
    }

    /// An amount from minor units (10⁻⁸), if within the bound.
    #[inline]
    pub fn from_units(units: i128) -> Result<Amount, AmountError> {
        // A range check, not `abs()`: `i128::MIN.abs()` overflows (the snapshot fuzzer found
        // a decoded amount of `i128::MIN` panicking here).
        if !(-UNITS_MAX..=UNITS_MAX).contains(&units) {
            return Err(AmountError::OutOfRange);
        }
        Ok(Amount::raw(units))
    }

    /// Bits that hold any amount in two's complement: the bound, 10²⁰ minor units, is under
    /// 2⁶⁷. Packed structures (accounts' funding, history entries) keep amounts at this width.
    pub const BITS: u32 = 68;

    /// The amount as [`Amount::BITS`]-bit two's complement, in the low bits (the rest zero).
    #[inline]
    #[allow(clippy::cast_sign_loss)] // the two's complement bits are the point
    pub const fn to_bits(self) -> u128 {
        // The low 68 bits of an `i128` within the bound are its two's complement.
        self.units() as u128 & BITS_MASK
    }

    /// The amount whose [`Amount::to_bits`] are the low [`Amount::BITS`] bits of `bits` (the
    /// rest are ignored), if within the bound: 68 bits also hold magnitudes up to 2⁶⁷, which
    /// are not amounts.
    #[inline]
    #[allow(clippy::cast_possible_wrap)] // the two's complement bits are the point
    pub fn from_bits(bits: u128) -> Result<Amount, AmountError> {
        const SHIFT: u32 = 128 - Amount::BITS;
        // Sign-extends the 68 bits.
        Amount::from_units((((bits & BITS_MASK) << SHIFT) as i128) >> SHIFT)
    }

    /// A whole number of currency units, if within the bound.
    pub fn from_whole(whole: i64) -> Result<Amount, AmountError> {
        Amount::from_units(i128::from(whole) * UNITS_PER_WHOLE)
    }

    /// The value in minor units (10⁻⁸).
    #[inline]
    pub const fn units(self) -> i128 {
        // Widening casts: both are exact.
        ((self.high as i128) << 64) | (self.low as i128)
    }

    #[inline]
    pub fn is_positive(self) -> bool {
        self.units() > 0
    }

    #[inline]
    pub fn is_negative(self) -> bool {
        self.units() < 0
    }

    #[inline]
    pub fn is_zero(self) -> bool {
        self.units() == 0
    }

    /// `self + other`, or `None` when the result leaves the bound.
    #[inline]
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        // Cannot overflow i128: both magnitudes are ≤ 10²⁰.
        Amount::from_units(self.units() + other.units()).ok()
    }

    /// `self - other`, or `None` when the result leaves the bound.
    #[inline]
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        Amount::from_units(self.units() - other.units()).ok()
    }

    /// `-self`; always representable because the bound is symmetric.
    #[inline]
    pub fn negate(self) -> Amount {
        Amount::raw(-self.units())
    }

    /// `|self|`; always representable because the bound is symmetric.
    #[inline]
    pub fn magnitude(self) -> Amount {
        Amount::raw(self.units().abs())
    }

    /// The exact decimal value.
    pub fn to_decimal(self) -> Decimal {
        // 10²⁰ fits Decimal's 96-bit mantissa (≈7.9·10²⁸), so this is exact.
        Decimal::from_i128_with_scale(self.units(), AMOUNT_FRACTION_DIGITS_MAX)
    }

    /// An amount from an exact decimal. Trailing zeros beyond 8 digits are fine (the value is
    /// still exact); a non-zero 9th digit is an error.
    pub fn from_decimal(value: Decimal) -> Result<Amount, AmountError> {
        let value = value.normalize();
        if value.scale() > AMOUNT_FRACTION_DIGITS_MAX {
            return Err(AmountError::TooManyFractionDigits);
        }
        let shift = AMOUNT_FRACTION_DIGITS_MAX - value.scale();
        let units = value
            .mantissa()
            .checked_mul(10_i128.pow(shift))
            .ok_or(AmountError::OutOfRange)?;
        Amount::from_units(units)
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Parses JSON-number-shaped text exactly: `-?digits(.digits)?([eE][+-]?digits)?`.
    /// No floating point is involved at any step.
    fn from_str(text: &str) -> Result<Amount, AmountError> {
        if text.is_empty() || text.len() > AMOUNT_TEXT_BYTES_MAX {
            return Err(if text.is_empty() {
                AmountError::Malformed
            } else {
                AmountError::OutOfRange
            });
        }
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], parse_exponent(&rest[at + 1..])?),
            None => (rest, 0),
        };
        let (whole, fraction) = match mantissa.split_once('.') {
            Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
            Some(_) => return Err(AmountError::Malformed),
            None => (mantissa, ""),
        };
        if whole.is_empty() || !is_digits(whole) || !is_digits(fraction) {
            return Err(AmountError::Malformed);
        }
        // digits · 10^(exponent − fraction.len()) with trailing zeros trimmed first, so that
        // "1.000000000" is accepted as exactly 1.
        let digits = format!("{whole}{fraction}");
        let trimmed = digits.trim_end_matches('0');
        let trailing_zeros =
            i64::try_from(digits.len() - trimmed.len()).map_err(|_| AmountError::OutOfRange)?;
        let significant = trimmed.trim_start_matches('0');
        if significant.is_empty() {
            return Ok(Amount::ZERO);
        }
        let fraction_len = i64::try_from(fraction.len()).map_err(|_| AmountError::OutOfRange)?;
        let power =
            exponent - fraction_len + trailing_zeros + i64::from(AMOUNT_FRACTION_DIGITS_MAX);
        if power < 0 {
            return Err(AmountError::TooManyFractionDigits);
        }
        // 21 significant digits already exceed 10²⁰ minor units.
        if significant.len() > 21 || power > 21 {
            return Err(AmountError::OutOfRange);
        }
        let mut units: i128 = 0;
        for byte in significant.bytes() {
            units = units * 10 + i128::from(byte - b'0');
        }
        let power = u32::try_from(power).map_err(|_| AmountError::OutOfRange)?;
        let units = units
            .checked_mul(10_i128.pow(power))
            .ok_or(AmountError::OutOfRange)?;
        Amount::from_units(if negative { -units } else { units })
    }
}

fn is_digits(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_digit())
}

fn parse_exponent(text: &str) -> Result<i64, AmountError> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !is_digits(digits) {
        return Err(if digits.len() > 4 && is_digits(digits) {
            AmountError::OutOfRange
        } else {
            AmountError::Malformed
        });
    }
    text.parse::<i64>().map_err(|_| AmountError::Malformed)
}

impl fmt::Display for Amount {
    /// Plain decimal text without trailing zeros: `12`, `-0.5`, `0.00000001`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_units(self.units(), formatter)
    }
}

/// Writes minor units as plain decimal text without trailing zeros.
fn write_units(units: i128, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
    let sign = if units < 0 { "-" } else { "" };
    let magnitude = units.unsigned_abs();
    let per_whole = UNITS_PER_WHOLE.unsigned_abs();
    let whole = magnitude / per_whole;
    let fraction = magnitude % per_whole;
    if fraction == 0 {
        return write!(formatter, "{sign}{whole}");
    }
    let fraction = format!("{fraction:08}");
    write!(
        formatter,
        "{sign}{whole}.{}",
        fraction.trim_end_matches('0')
    )
}

/// A sum of many amounts (a family's total balance or credit limit). It may exceed the bound of
/// a single [`Amount`], but never `i128`: even 10¹⁵ accounts at the bound sum to 10³⁵.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Total(i128);

impl Total {
    pub const ZERO: Total = Total(0);

    /// The sum of `self` and `amount`, saturating (unreachable with realistic account counts).
    pub fn plus(self, amount: Amount) -> Total {
        Total(self.0.saturating_add(amount.units()))
    }

    pub fn units(self) -> i128 {
        self.0
    }

    /// The exact decimal value, or `None` beyond Decimal's 96-bit mantissa (≈7.9·10²⁰ units).
    pub fn to_decimal(self) -> Option<Decimal> {
        Decimal::try_from_i128_with_scale(self.0, AMOUNT_FRACTION_DIGITS_MAX).ok()
    }
}

impl fmt::Display for Total {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_units(self.0, formatter)
    }
}

impl fmt::Debug for Total {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Total({self})")
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Amount({self})")
    }
}

impl bincode::Encode for Amount {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.units().encode(encoder)
    }
}

impl<Context> bincode::Decode<Context> for Amount {
    /// Decoding re-checks the bound: a hostile or corrupt record cannot smuggle in an amount
    /// that later arithmetic would overflow on.
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let units = i128::decode(decoder)?;
        Amount::from_units(units)
            .map_err(|_| bincode::error::DecodeError::Other("amount out of range"))
    }
}

impl<'de, Context> bincode::BorrowDecode<'de, Context> for Amount {
    fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        bincode::Decode::decode(decoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Amount, AmountError> {
        text.parse()
    }

    #[test]
    fn extreme_units_are_refused_not_panicked_on() {
        for units in [
            i128::MIN,
            i128::MIN + 1,
            i128::MAX,
            -UNITS_MAX - 1,
            UNITS_MAX + 1,
        ] {
            assert_eq!(
                Amount::from_units(units),
                Err(AmountError::OutOfRange),
                "{units}"
            );
        }
        assert_eq!(Amount::from_units(-UNITS_MAX), Ok(Amount::MIN));
        assert_eq!(Amount::from_units(UNITS_MAX), Ok(Amount::MAX));
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(parse("0.1"), Ok(Amount::raw(10_000_000)));
        assert_eq!(parse("12"), Ok(Amount::raw(1_200_000_000)));
        assert_eq!(parse("-0.00000001"), Ok(Amount::raw(-1)));
        assert_eq!(parse("1.000000000"), Ok(Amount::raw(100_000_000)));
        assert_eq!(parse("1e2"), Ok(Amount::raw(10_000_000_000)));
        assert_eq!(parse("15E-1"), Ok(Amount::raw(150_000_000)));
        assert_eq!(parse("0"), Ok(Amount::ZERO));
        assert_eq!(parse("1000000000000"), Ok(Amount::MAX));
    }

    #[test]
    fn rejects_what_it_cannot_hold_exactly() {
        assert_eq!(
            parse("0.000000001"),
            Err(AmountError::TooManyFractionDigits)
        );
        assert_eq!(parse("1e-9"), Err(AmountError::TooManyFractionDigits));
        assert_eq!(
            parse("1000000000000.00000001"),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(parse("1e40"), Err(AmountError::OutOfRange));
        assert_eq!(parse("1e99999"), Err(AmountError::OutOfRange));
        for bad in [
            "", "-", ".5", "5.", "1..2", "abc", "1e", "+1", "0x10", " 1", "1 ", "NaN",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn displays_without_trailing_zeros() {
        assert_eq!(Amount::raw(150_000_000).to_string(), "1.5");
        assert_eq!(Amount::raw(-1).to_string(), "-0.00000001");
        assert_eq!(Amount::raw(0).to_string(), "0");
        assert_eq!(Amount::MIN.to_string(), "-1000000000000");
    }

    #[test]
    fn decimal_round_trip_is_exact() {
        let amount = parse("123.45678901").expect("valid");
        assert_eq!(Amount::from_decimal(amount.to_decimal()), Ok(amount));
        let too_fine = Decimal::from_i128_with_scale(1, 9);
        assert_eq!(
            Amount::from_decimal(too_fine),
            Err(AmountError::TooManyFractionDigits)
        );
    }

    #[test]
    fn arithmetic_respects_the_bound() {
        assert_eq!(Amount::MAX.checked_add(Amount::raw(1)), None);
        assert_eq!(Amount::MIN.checked_sub(Amount::raw(1)), None);
        assert_eq!(
            Amount::raw(5).checked_sub(Amount::raw(7)),
            Some(Amount::raw(-2))
        );
        assert_eq!(Amount::MIN.negate(), Amount::MAX);
    }

    proptest::proptest! {
        #[test]
        fn text_round_trip(units in -UNITS_MAX..=UNITS_MAX) {
            let amount = Amount::raw(units);
            proptest::prop_assert_eq!(parse(&amount.to_string()), Ok(amount));
        }

        /// Every amount reads back from its 68 bits, whatever is above them; any 68 bits read
        /// as an amount whose bits they are, or are refused.
        #[test]
        fn bits_round_trip(units in -UNITS_MAX..=UNITS_MAX, above in proptest::prelude::any::<u64>(), bits in proptest::prelude::any::<u128>()) {
            let amount = Amount::raw(units);
            proptest::prop_assert_eq!(amount.to_bits() >> Amount::BITS, 0);
            let dirty = amount.to_bits() | (u128::from(above) << 64 << Amount::BITS.saturating_sub(64));
            proptest::prop_assert_eq!(Amount::from_bits(dirty), Ok(amount));
            if let Ok(read) = Amount::from_bits(bits) {
                proptest::prop_assert_eq!(read.to_bits(), bits & BITS_MASK);
            }
        }
    }

    #[test]
    fn the_bounds_fit_the_bits_and_one_more_does_not() {
        for amount in [Amount::MAX, Amount::MIN, Amount::ZERO, Amount::raw(-1)] {
            assert_eq!(Amount::from_bits(amount.to_bits()), Ok(amount));
        }
        let past = (UNITS_MAX + 1).cast_unsigned() & BITS_MASK;
        assert_eq!(Amount::from_bits(past), Err(AmountError::OutOfRange));
        assert_eq!(
            Amount::from_bits((-UNITS_MAX - 1).cast_unsigned() & BITS_MASK),
            Err(AmountError::OutOfRange)
        );
    }
}
