//! The national division-code table (GB/T 2260 style, see data/divisions/SOURCE.md),
//! embedded in the binary so the simulator and demo run on a fresh machine anywhere.

/// County-level divisions: code,name,cityCode,provinceCode.
pub const AREAS_CSV: &str = include_str!("../../data/divisions/areas.csv");
/// Province-level divisions: code,name.
pub const PROVINCES_CSV: &str = include_str!("../../data/divisions/provinces.csv");

/// One division: its code and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Division {
    /// The division code (2 digits for a province, 6 for a county).
    pub code: String,
    /// Its name.
    pub name: String,
}

fn parse(csv: &str, code_len: usize) -> Vec<Division> {
    csv.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(',');
            let code = fields.next()?.trim().to_owned();
            let name = fields.next()?.trim().trim_matches('"').to_owned();
            (code.len() == code_len && code.bytes().all(|b| b.is_ascii_digit())).then_some(Division { code, name })
        })
        .collect()
}

/// Every county-level division: the receivers.
pub fn counties() -> Vec<Division> {
    parse(AREAS_CSV, 6)
}

/// Every province-level division.
pub fn provinces() -> Vec<Division> {
    parse(PROVINCES_CSV, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_complete() {
        assert_eq!(counties().len(), 2978);
        assert_eq!(provinces().len(), 31);
        assert!(counties().iter().any(|c| c.code == "410102"));
    }
}
