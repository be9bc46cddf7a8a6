//! Money in exact integer thousandths of a yuan (厘), the unit the contract's 0.041 yuan price is whole in.

/// Clause 4.2: the price of one billed segment, in thousandths of a yuan.
pub const PRICE_PER_SEGMENT_LI: u64 = 41;

/// Clause 4.1.5: the budget for the service period, 1,430,000 yuan.
pub const BUDGET: Money = Money::yuan(1_430_000);

/// Clauses 6.9 and 6.10: the deduction for each settlement period under a threshold.
pub const PENALTY_PER_PERIOD: Money = Money::yuan(2_000);

/// An amount in thousandths of a yuan (li). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money {
    pub li: u64,
}

impl Money {
    pub const ZERO: Money = Money { li: 0 };

    pub const fn yuan(yuan: u64) -> Self {
        Self { li: yuan * 1000 }
    }

    /// The fee for `segments` billed segments at 0.041 yuan each.
    pub const fn for_segments(segments: u64) -> Self {
        Self {
            li: segments * PRICE_PER_SEGMENT_LI,
        }
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money {
            li: self.li.saturating_sub(other.li),
        }
    }

    pub fn plus(self, other: Money) -> Money {
        Money {
            li: self.li + other.li,
        }
    }
}

impl std::fmt::Display for Money {
    /// `1,234,567.891` (yuan with thousands separators and three decimals).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yuan = self.li / 1000;
        let li = self.li % 1000;
        write!(f, "{}.{li:03}", group_thousands(yuan))
    }
}

/// `1234567` as `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_are_exact() {
        assert_eq!(Money::for_segments(1).to_string(), "0.041");
        assert_eq!(Money::for_segments(34_878_049).to_string(), "1,430,000.009");
        assert_eq!(BUDGET.to_string(), "1,430,000.000");
        assert_eq!(Money::for_segments(1000).li, 41_000);
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
    }
}
