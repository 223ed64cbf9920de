//! RFC 7285 PIDName rules (section 10.1): 1 to 64 characters of `[A-Za-z0-9-:@_.]`.

/// Why a string is not a valid PIDName.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PidNameError {
    /// The name is empty.
    #[error("is empty")]
    Empty,
    /// The name is longer than 64 characters.
    #[error("is {0} characters long, at most 64 are allowed")]
    TooLong(usize),
    /// The name holds a character outside `[A-Za-z0-9-:@_.]`.
    #[error("contains {0:?}; only A-Z a-z 0-9 - : @ _ . are allowed")]
    BadChar(char),
}

/// Checks a PID (or resource id) name against RFC 7285 section 10.1.
pub fn validate_pid_name(name: &str) -> Result<(), PidNameError> {
    if name.is_empty() {
        return Err(PidNameError::Empty);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '@' | '_' | '.')))
    {
        return Err(PidNameError::BadChar(c));
    }
    if name.len() > 64 {
        return Err(PidNameError::TooLong(name.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_rfc_alphabet_and_rejects_the_rest() {
        assert_eq!(validate_pid_name("newy-us-abilene:1@x_y.z"), Ok(()));
        assert_eq!(validate_pid_name(""), Err(PidNameError::Empty));
        assert_eq!(validate_pid_name("a b"), Err(PidNameError::BadChar(' ')));
        assert_eq!(validate_pid_name(&"a".repeat(64)), Ok(()));
        assert_eq!(
            validate_pid_name(&"a".repeat(65)),
            Err(PidNameError::TooLong(65))
        );
    }
}
