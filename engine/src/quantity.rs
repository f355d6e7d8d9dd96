//! Resource quantities (`"100m"`, `"500Mi"`, `"1e3"`) as exact integers.
//!
//! Kubernetes writes resources as decimal numbers with an SI, binary-SI or exponent
//! suffix. keelson parses them once, at the edge, into a count of nano-units held in an
//! `i128` (exact for every quantity Kubernetes accepts: 1 Ei is 1.15e27 nano-units,
//! far below i128's 1.7e38), and the hot paths work on `i64` milli-units (CPU) or units
//! (bytes). Precision finer than one nano-unit is rounded away from zero, as Kubernetes
//! does. [`Quantity`]'s `Display` is Kubernetes' canonical form, so a parsed quantity
//! prints the way `kubectl` would show it back (`"1.5Gi"` → `"1536Mi"`, `"0.5"` → `"500m"`).

use std::fmt;
use std::str::FromStr;

const NANOS_PER_UNIT: i128 = 1_000_000_000;
/// Largest magnitude accepted, in nano-units (1e36 = 1e27 units): far past anything a
/// resource can hold, and a hundredfold below i128's limit so arithmetic stays exact.
const NANOS_MAX: i128 = 1_000_000_000_000_000_000_000_000_000_000_000_000;
/// Significant digits kept while parsing the mantissa; further digits only round up.
const MANTISSA_MAX: i128 = 1_000_000_000_000_000_000_000_000_000_000_000_000;

/// Which suffix family a quantity was written in; the canonical form keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// `m`, `k`, `M`, `G`, ... or no suffix.
    DecimalSI,
    /// `Ki`, `Mi`, `Gi`, ...
    BinarySI,
    /// `e3`, `E-6`, ...
    DecimalExponent,
}

/// An exactly represented Kubernetes quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

/// Why a quantity string was rejected. Messages follow Kubernetes' wording.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    #[error("unable to parse quantity's suffix")]
    Suffix,
    #[error("quantity is too large")]
    TooLarge,
}

impl Quantity {
    pub const ZERO: Quantity = Quantity { nanos: 0, format: QuantityFormat::DecimalSI };

    /// A quantity of `millis` thousandths of a unit (`Quantity::from_millis(100)` is `100m`).
    pub const fn from_millis(millis: i64) -> Quantity {
        Quantity { nanos: millis as i128 * 1_000_000, format: QuantityFormat::DecimalSI }
    }

    /// A whole number of units in the given format (`from_units(1 << 20, BinarySI)` is `1Mi`).
    pub const fn from_units(units: i64, format: QuantityFormat) -> Quantity {
        Quantity { nanos: units as i128 * NANOS_PER_UNIT, format }
    }

    pub const fn format(self) -> QuantityFormat {
        self.format
    }

    /// The exact value in nano-units.
    pub const fn nanos(self) -> i128 {
        self.nanos
    }

    /// `ceil(q × 1000)`, saturated to `i64`: the unit of CPU in the scheduler.
    pub fn milli_value(self) -> i64 {
        saturate(ceil_div(self.nanos, 1_000_000))
    }

    /// `ceil(q)`, saturated to `i64`: the unit of memory and storage (bytes).
    pub fn value(self) -> i64 {
        saturate(ceil_div(self.nanos, NANOS_PER_UNIT))
    }

    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// The sum, in the first operand's format unless it is zero (kube's `Add`, where a
    /// zero quantity takes the other's format). Saturates at the accepted maximum.
    pub fn plus(self, other: Quantity) -> Quantity {
        let format = if self.nanos == 0 { other.format } else { self.format };
        Quantity { nanos: (self.nanos + other.nanos).clamp(-NANOS_MAX, NANOS_MAX), format }
    }

    /// The difference, in the first operand's format unless it is zero (kube's `Sub`).
    pub fn minus(self, other: Quantity) -> Quantity {
        let format = if self.nanos == 0 { other.format } else { self.format };
        Quantity { nanos: (self.nanos - other.nanos).clamp(-NANOS_MAX, NANOS_MAX), format }
    }

    /// The larger of the two (the first on a tie).
    pub fn larger(self, other: Quantity) -> Quantity {
        if other.nanos > self.nanos {
            other
        } else {
            self
        }
    }
}

fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    if n.rem_euclid(d) == 0 {
        q
    } else {
        q + 1
    }
}

fn saturate(value: i128) -> i64 {
    value.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Splits `"1.5Gi"` into its sign, digits and suffix.
struct Parts<'a> {
    negative: bool,
    integer: &'a str,
    fraction: &'a str,
    suffix: &'a str,
}

fn split(text: &str) -> Result<Parts<'_>, QuantityError> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let integer_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (integer, rest) = rest.split_at(integer_len);
    let (fraction, suffix) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            let fraction_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            after_dot.split_at(fraction_len)
        }
        None => ("", rest),
    };
    if integer.is_empty() && fraction.is_empty() {
        return Err(QuantityError::Format);
    }
    Ok(Parts { negative, integer, fraction, suffix })
}

/// The suffix as (format, power of ten, power of 1024).
fn parse_suffix(suffix: &str) -> Result<(QuantityFormat, i32, u32), QuantityError> {
    use QuantityFormat::*;
    let parsed = match suffix {
        "" => (DecimalSI, 0, 0),
        "n" => (DecimalSI, -9, 0),
        "u" => (DecimalSI, -6, 0),
        "m" => (DecimalSI, -3, 0),
        "k" => (DecimalSI, 3, 0),
        "M" => (DecimalSI, 6, 0),
        "G" => (DecimalSI, 9, 0),
        "T" => (DecimalSI, 12, 0),
        "P" => (DecimalSI, 15, 0),
        "E" => (DecimalSI, 18, 0),
        "Ki" => (BinarySI, 0, 1),
        "Mi" => (BinarySI, 0, 2),
        "Gi" => (BinarySI, 0, 3),
        "Ti" => (BinarySI, 0, 4),
        "Pi" => (BinarySI, 0, 5),
        "Ei" => (BinarySI, 0, 6),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or(QuantityError::Suffix)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Suffix);
            }
            let power: i32 = exponent.parse().map_err(|_| QuantityError::Suffix)?;
            (DecimalExponent, power, 0)
        }
    };
    Ok(parsed)
}

/// Reads decimal digits into a mantissa, keeping at most `MANTISSA_MAX` worth of
/// significant digits. Returns (mantissa, extra power of ten, whether non-zero digits
/// were dropped).
fn read_mantissa(integer: &str, fraction: &str) -> (i128, i32, bool) {
    let fraction = fraction.trim_end_matches('0');
    let mut mantissa: i128 = 0;
    let mut power = -(fraction.len() as i32);
    let mut dropped_nonzero = false;
    let digits = integer.bytes().chain(fraction.bytes());
    for digit in digits {
        let value = i128::from(digit - b'0');
        if mantissa < MANTISSA_MAX / 10 {
            mantissa = mantissa * 10 + value;
        } else {
            // Past the kept precision: the digit still counts as a power of ten
            // (the fraction's length was already subtracted from `power`).
            power += 1;
            dropped_nonzero |= value != 0;
        }
    }
    (mantissa, power, dropped_nonzero)
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts = split(text)?;
        let (format, suffix_power, binary_power) = parse_suffix(parts.suffix)?;
        let (mantissa, digit_power, mut inexact) = read_mantissa(parts.integer, parts.fraction);
        let mut nanos = mantissa;
        for _ in 0..binary_power {
            nanos = nanos.checked_mul(1024).ok_or(QuantityError::TooLarge)?;
        }
        let power = digit_power + suffix_power + 9;
        if power >= 0 {
            for _ in 0..power {
                if nanos == 0 {
                    break;
                }
                nanos = nanos.checked_mul(10).ok_or(QuantityError::TooLarge)?;
            }
        } else {
            for _ in 0..(-power) {
                if nanos == 0 {
                    break;
                }
                inexact |= nanos % 10 != 0;
                nanos /= 10;
            }
        }
        if inexact {
            nanos += 1; // round away from zero, as Kubernetes does
        }
        if nanos > NANOS_MAX {
            return Err(QuantityError::TooLarge);
        }
        if parts.negative {
            nanos = -nanos;
        }
        Ok(Quantity { nanos, format })
    }
}

impl fmt::Display for Quantity {
    /// Kubernetes' canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        if self.format == QuantityFormat::BinarySI {
            let magnitude = self.nanos.abs();
            // Small or fractional binary quantities are shown in decimal so nothing is lost.
            if magnitude >= 1024 * NANOS_PER_UNIT && magnitude % NANOS_PER_UNIT == 0 {
                let mut units = self.nanos / NANOS_PER_UNIT;
                let mut power = 0;
                while power < 6 && units % 1024 == 0 {
                    units /= 1024;
                    power += 1;
                }
                const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                return write!(f, "{units}{}", SUFFIXES[power]);
            }
        }
        let mut mantissa = self.nanos;
        let mut power = -9;
        let exponent_form = self.format == QuantityFormat::DecimalExponent;
        while mantissa % 1000 == 0 && (exponent_form || power < 18) {
            mantissa /= 1000;
            power += 3;
        }
        if exponent_form {
            if power == 0 {
                write!(f, "{mantissa}")
            } else {
                write!(f, "{mantissa}e{power}")
            }
        } else {
            let suffix = match power {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                _ => "E",
            };
            write!(f, "{mantissa}{suffix}")
        }
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = QuantityError;

    fn try_from(value: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Result<Self, Self::Error> {
        value.0.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(text: &str) -> Quantity {
        text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn sums_keep_the_first_non_zero_format() {
        assert_eq!(q("500Mi").plus(q("500Mi")).to_string(), "1000Mi");
        assert_eq!(q("100m").plus(q("1900m")).to_string(), "2");
        assert_eq!(Quantity::ZERO.plus(q("1Gi")).to_string(), "1Gi");
        // 2^30 + 10^9 bytes is not a whole number of KiB: shown in decimal.
        assert_eq!(q("1Gi").plus(q("1G")).to_string(), "2073741824");
        assert_eq!(q("1").larger(q("900m")), q("1"));
        assert_eq!(q("1").larger(q("1500m")), q("1500m"));
    }

    #[test]
    fn values_match_kubernetes() {
        // (input, milli_value, value)
        let cases: &[(&str, i64, i64)] = &[
            ("100m", 100, 1),
            ("2", 2000, 2),
            ("0.5", 500, 1),
            (".5", 500, 1),
            ("5.", 5000, 5),
            ("500Mi", 524_288_000_000, 524_288_000),
            ("1G", 1_000_000_000_000, 1_000_000_000),
            ("1e3", 1_000_000, 1000),
            ("1E3", 1_000_000, 1000),
            ("128974848", 128_974_848_000, 128_974_848),
            ("1Ki", 1_024_000, 1024),
            ("1.5Gi", 1_610_612_736_000, 1_610_612_736),
            ("1n", 1, 1),
            ("1u", 1, 1),
            ("-100m", -100, 0),
            ("+3", 3000, 3),
            ("12e-3", 12, 1),
            ("0", 0, 0),
            ("0.0001", 1, 1),
        ];
        for &(text, milli, value) in cases {
            let parsed = q(text);
            assert_eq!(parsed.milli_value(), milli, "{text} milli");
            assert_eq!(parsed.value(), value, "{text} value");
        }
    }

    #[test]
    fn canonical_forms_match_kubernetes() {
        let cases = [
            ("100m", "100m"),
            ("2", "2"),
            ("0.5", "500m"),
            ("500Mi", "500Mi"),
            ("1G", "1G"),
            ("1e3", "1e3"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("1500000", "1500k"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("129M", "129M"),
            ("1.5Gi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("1024", "1024"),
            ("1024Ki", "1Mi"),
            ("100Ki", "100Ki"),
            ("0.5Ki", "512"),
            ("1.1Ki", "1126400m"),
            ("10Ei", "10Ei"),
            ("0.1n", "1n"),
            ("-1.5", "-1500m"),
            ("0Mi", "0"),
            ("1e0", "1"),
            ("100e-3", "100e-3"),
        ];
        for (input, canonical) in cases {
            assert_eq!(q(input).to_string(), canonical, "canonical form of {input}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for text in [
            "", "m", "-", ".", "1.2.3", "1 m", "1mm", "1Zi", "1ki", "1e", "1e+", "abc", "1K", "1.5e3.5", "--1",
            "1e99999",
        ] {
            assert!(text.parse::<Quantity>().is_err(), "{text:?} parsed");
        }
        assert_eq!("1e100".parse::<Quantity>(), Err(QuantityError::TooLarge));
    }

    #[test]
    fn long_inputs_keep_precision_and_round_up() {
        assert_eq!(q("1.0000000000000000000000000000000000000000000000000").milli_value(), 1000);
        assert_eq!(q("1.0000000000000000000000000000000000000000000000001").nanos(), NANOS_PER_UNIT + 1);
        assert_eq!(q("000000000000000000000000000000000000000000000000002").value(), 2);
    }

    fn any_quantity() -> impl Strategy<Value = String> {
        let suffix = prop::sample::select(vec![
            "", "n", "u", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti", "e3", "e-3", "E6", "e0",
        ]);
        (any::<bool>(), 0u64..1_000_000_000, 0u32..4, suffix).prop_map(|(neg, digits, dot, suffix)| {
            let mut number = digits.to_string();
            if dot > 0 && number.len() > dot as usize {
                number.insert(number.len() - dot as usize, '.');
            }
            format!("{}{number}{suffix}", if neg { "-" } else { "" })
        })
    }

    proptest! {
        #[test]
        fn canonical_form_round_trips(text in any_quantity()) {
            let parsed: Quantity = text.parse().unwrap();
            let canonical = parsed.to_string();
            let reparsed: Quantity = canonical.parse().unwrap();
            prop_assert_eq!(reparsed.nanos(), parsed.nanos(), "{} -> {}", text, canonical);
            prop_assert_eq!(reparsed.to_string(), canonical);
        }

        #[test]
        fn parser_never_panics(text in "[-+0-9.eEinumkKMGTP]{0,24}") {
            let _ = text.parse::<Quantity>();
        }
    }
}
