//! Kubernetes resource quantities ("100m", "1.5Gi", "2e3") as integers.
//!
//! Hand-written on purpose: k8s-openapi's `Quantity` is a bare string, and the
//! scheduler needs apimachinery's exact integer semantics — `MilliValue` and
//! `Value` round *up* any fraction — on a hot path (every pod entering the
//! cache), without decimal-library allocations.

/// Parses a quantity and returns it scaled by 10^`scale_exp` (0 for `Value`,
/// 3 for `MilliValue`), rounded up to an integer, saturating at i64 bounds.
pub fn parse_scaled(text: &str, scale_exp: u32) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty quantity".into());
    }
    let (sign, body) = match s.as_bytes()[0] {
        b'-' => (-1i128, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(format!("invalid quantity {text:?}"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // value = digits * 10^(dec_exp) * 2^(bin_exp)
    let mut digits: i128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        digits = digits
            .checked_mul(10)
            .and_then(|d| d.checked_add(i128::from(c as u8 - b'0')))
            .ok_or_else(|| format!("quantity {text:?} is too large"))?;
    }
    let mut dec_exp: i32 = -(frac_part.len() as i32);
    let mut bin_exp: u32 = 0;
    match suffix {
        "" => {}
        "n" => dec_exp -= 9,
        "u" => dec_exp -= 6,
        "m" => dec_exp -= 3,
        "k" => dec_exp += 3,
        "M" => dec_exp += 6,
        "G" => dec_exp += 9,
        "T" => dec_exp += 12,
        "P" => dec_exp += 15,
        "E" => dec_exp += 18,
        "Ki" => bin_exp = 10,
        "Mi" => bin_exp = 20,
        "Gi" => bin_exp = 30,
        "Ti" => bin_exp = 40,
        "Pi" => bin_exp = 50,
        "Ei" => bin_exp = 60,
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..]
                .parse()
                .map_err(|_| format!("invalid exponent in quantity {text:?}"))?;
            dec_exp += exp;
        }
        other => return Err(format!("invalid suffix {other:?} in quantity {text:?}")),
    }
    dec_exp += scale_exp as i32;
    let mut value = digits;
    if bin_exp > 0 {
        value = value.saturating_mul(1i128 << bin_exp);
    }
    if dec_exp >= 0 {
        for _ in 0..dec_exp {
            value = value.saturating_mul(10);
            if value > i128::from(i64::MAX) {
                break;
            }
        }
    } else {
        let divisor = 10i128.checked_pow((-dec_exp) as u32).unwrap_or(i128::MAX);
        // Ceiling for positive values, as apimachinery rounds away from zero.
        value = (value + divisor - 1) / divisor;
    }
    let value = sign * value;
    Ok(value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// `Quantity.Value()`: whole units, fractions rounded up.
pub fn value(text: &str) -> Result<i64, String> {
    parse_scaled(text, 0)
}

/// `Quantity.MilliValue()`: thousandths, fractions rounded up.
pub fn milli_value(text: &str) -> Result<i64, String> {
    parse_scaled(text, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_milli_values() {
        for (q, want) in [
            ("1", 1000),
            ("100m", 100),
            ("0.5", 500),
            ("1.5", 1500),
            ("250m", 250),
            ("0.0001", 1),
            ("1k", 1_000_000),
            ("2e3", 2_000_000),
            ("500u", 1),
            ("0", 0),
        ] {
            assert_eq!(milli_value(q), Ok(want), "{q}");
        }
    }

    #[test]
    fn memory_values() {
        for (q, want) in [
            ("128Mi", 128 << 20),
            ("1Gi", 1 << 30),
            ("1G", 1_000_000_000),
            ("1.5Gi", 3 << 29),
            ("100", 100),
            ("1Ki", 1024),
            ("10e6", 10_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("100m", 1),
        ] {
            assert_eq!(value(q), Ok(want), "{q}");
        }
    }

    #[test]
    fn saturates_and_rejects() {
        assert_eq!(value("100Ei"), Ok(i64::MAX));
        assert_eq!(value("-1"), Ok(-1));
        for bad in ["", "abc", "1.2.3", "1Zi", "Mi", "1e", "."] {
            assert!(value(bad).is_err(), "{bad}");
        }
    }
}
