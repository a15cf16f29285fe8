//! NHS numbers: the Modulus 11 check of a ten-digit NHS number.
//!
//! Devices and the server both need it (a later issue checks identifiers on both sides), so it
//! lives here, with no dependencies. It checks the form of a number only, never whether it was
//! issued to anyone.

/// Whether `number` (spaces allowed) is a ten-digit NHS number with a valid Modulus 11 check digit.
pub fn nhs_number_is_valid(number: &str) -> bool {
    let digits: Vec<u32> = number
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_digit(10))
        .collect::<Option<_>>()
        .unwrap_or_default();
    if digits.len() != 10 {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| d * w)
        .sum();
    match 11 - sum % 11 {
        11 => digits[9] == 0,
        10 => false,
        check => digits[9] == check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modulus_11_check_accepts_good_numbers_and_refuses_bad_ones() {
        assert!(nhs_number_is_valid("943 476 5919"));
        assert!(!nhs_number_is_valid("943 476 5918"));
        assert!(
            !nhs_number_is_valid("999 123 4560"),
            "check digit 10 is never valid"
        );
        assert!(!nhs_number_is_valid("12345"));
        assert!(!nhs_number_is_valid("999 234 567x"));
    }
}
