//! Starting-hand classes (the 169 of the 13x13 grid) and ranges in the usual
//! syntax: `QQ+, AKs, ATo+, 76s, KQo, 22-55, A2s-A5s, AhKh`.

use std::fmt;

use super::cards::{Card, CardSet, ParseError, RANKS, parse_hole};

/// A starting-hand class such as `AKs`, `QQ` or `T9o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HandClass {
    /// Higher rank (0 = deuce .. 12 = ace).
    pub high: u8,
    pub low: u8,
    pub suited: bool,
}

impl HandClass {
    pub fn of(hole: [Card; 2]) -> HandClass {
        let (a, b) = (hole[0], hole[1]);
        HandClass {
            high: a.rank().max(b.rank()),
            low: a.rank().min(b.rank()),
            suited: a.suit() == b.suit() && a.rank() != b.rank(),
        }
    }

    pub fn is_pair(self) -> bool {
        self.high == self.low
    }

    /// Grid index 0..169: pairs on the diagonal, suited above, offsuit below.
    pub fn index(self) -> usize {
        let (h, l) = (self.high as usize, self.low as usize);
        if self.suited { h * 13 + l } else { l * 13 + h }
    }

    pub fn from_index(index: usize) -> HandClass {
        let (a, b) = ((index / 13) as u8, (index % 13) as u8);
        HandClass {
            high: a.max(b),
            low: a.min(b),
            suited: a > b,
        }
    }

    /// Number of card combinations: 6 pairs, 4 suited, 12 offsuit.
    pub fn combo_count(self) -> u32 {
        if self.is_pair() {
            6
        } else if self.suited {
            4
        } else {
            12
        }
    }

    /// Every concrete two-card combination of this class.
    pub fn combos(self) -> Vec<[Card; 2]> {
        let mut out = Vec::with_capacity(12);
        for s1 in 0..4 {
            for s2 in 0..4 {
                let a = Card::new(self.high, s1);
                let b = Card::new(self.low, s2);
                let keep = if self.is_pair() {
                    s1 < s2
                } else if self.suited {
                    s1 == s2
                } else {
                    s1 != s2
                };
                if keep {
                    out.push([a, b]);
                }
            }
        }
        out
    }
}

impl fmt::Display for HandClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, l) = (
            RANKS[self.high as usize] as char,
            RANKS[self.low as usize] as char,
        );
        if self.is_pair() {
            write!(f, "{h}{l}")
        } else {
            write!(f, "{h}{l}{}", if self.suited { 's' } else { 'o' })
        }
    }
}

/// A set of concrete hole-card combinations, each once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub combos: Vec<[Card; 2]>,
}

impl Range {
    /// All combos that share no card with `dead`.
    pub fn without(&self, dead: CardSet) -> Vec<[Card; 2]> {
        self.combos
            .iter()
            .filter(|c| !dead.contains(c[0]) && !dead.contains(c[1]))
            .copied()
            .collect()
    }

    fn add(&mut self, seen: &mut [bool; 52 * 52], combo: [Card; 2]) {
        let (a, b) = (combo[0].index() as usize, combo[1].index() as usize);
        let key = a.max(b) * 52 + a.min(b);
        if !seen[key] {
            seen[key] = true;
            self.combos.push(combo);
        }
    }
}

const RANGE_HINT: &str = "use classes like `QQ+, AKs, ATo+, 76s, KQo`, spans like `22-55` or `A2s-A5s`, or exact cards like `AhKh`";

fn rank_of(byte: u8) -> Option<u8> {
    RANKS
        .iter()
        .position(|&r| r == byte.to_ascii_uppercase())
        .map(|r| r as u8)
}

/// The classes named by one token without `+` or `-`: `QQ`, `AKs`, `AKo`, `AK`.
fn classes_of(token: &str) -> Option<Vec<HandClass>> {
    let b = token.as_bytes();
    if b.len() < 2 || b.len() > 3 {
        return None;
    }
    let (r1, r2) = (rank_of(b[0])?, rank_of(b[1])?);
    let (high, low) = (r1.max(r2), r1.min(r2));
    let kinds: &[bool] = match b.get(2).map(u8::to_ascii_lowercase) {
        None if high == low => &[false],
        None => &[true, false],
        Some(b's') if high != low => &[true],
        Some(b'o') if high != low => &[false],
        _ => return None,
    };
    Some(
        kinds
            .iter()
            .map(|&suited| HandClass { high, low, suited })
            .collect(),
    )
}

/// Expand one token (`QQ+`, `ATo+`, `22-55`, `A2s-A5s`, `76s`, `AhKh`).
fn expand(token: &str) -> Option<Vec<HandClass>> {
    if let Some(base) = token.strip_suffix('+') {
        let classes = classes_of(base)?;
        let mut out = Vec::new();
        for class in classes {
            if class.is_pair() {
                out.extend((class.high..13).map(|r| HandClass {
                    high: r,
                    low: r,
                    suited: false,
                }));
            } else {
                out.extend((class.low..class.high).map(|l| HandClass { low: l, ..class }));
            }
        }
        return Some(out);
    }
    if let Some((from, to)) = token.split_once('-') {
        let (a, b) = (classes_of(from)?, classes_of(to)?);
        let mut out = Vec::new();
        for (x, y) in a.into_iter().zip(b) {
            if x.is_pair() && y.is_pair() {
                let (lo, hi) = (x.high.min(y.high), x.high.max(y.high));
                out.extend((lo..=hi).map(|r| HandClass {
                    high: r,
                    low: r,
                    suited: false,
                }));
            } else if x.high == y.high && x.suited == y.suited && !x.is_pair() && !y.is_pair() {
                let (lo, hi) = (x.low.min(y.low), x.low.max(y.low));
                out.extend((lo..=hi).map(|l| HandClass { low: l, ..x }));
            } else {
                return None;
            }
        }
        return Some(out);
    }
    classes_of(token)
}

/// Parse a range; errors carry the span of the offending token.
pub fn parse_range(text: &str) -> Result<Range, ParseError> {
    let mut range = Range::default();
    let mut seen = [false; 52 * 52];
    let mut at = 0;
    for piece in text.split(',') {
        let trimmed = piece.trim();
        let start = at + piece.find(trimmed).unwrap_or(0);
        at += piece.len() + 1;
        if trimmed.is_empty() {
            continue;
        }
        if let Some(classes) = expand(trimmed) {
            for class in classes {
                for combo in class.combos() {
                    range.add(&mut seen, combo);
                }
            }
        } else if trimmed.len() == 4 {
            let combo = parse_hole(trimmed).map_err(|e| e.shifted(start))?;
            range.add(&mut seen, combo);
        } else {
            return Err(ParseError::new(
                format!("`{trimmed}` is not a hand range"),
                start,
                trimmed.len(),
                RANGE_HINT,
            ));
        }
    }
    if range.combos.is_empty() {
        return Err(ParseError::new(
            "the range is empty",
            0,
            text.len(),
            RANGE_HINT,
        ));
    }
    Ok(range)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_combos_of_usual_ranges() {
        let count = |t: &str| parse_range(t).unwrap().combos.len();
        assert_eq!(count("QQ+"), 18);
        assert_eq!(count("AKs"), 4);
        assert_eq!(count("ATo+"), 48);
        assert_eq!(count("QQ+, AKs, ATo+, 76s, KQo"), 18 + 4 + 48 + 4 + 12);
        assert_eq!(count("22-55"), 24);
        assert_eq!(count("A2s-A5s"), 16);
        assert_eq!(count("AK"), 16);
        assert_eq!(count("AhKh, AKs"), 4);
    }

    #[test]
    fn bad_tokens_are_located() {
        let err = parse_range("QQ+, AXs").unwrap_err();
        assert_eq!((err.offset, err.len), (5, 3));
        assert!(parse_range("").is_err());
        assert!(parse_range("AA-KQs").is_err());
    }

    #[test]
    fn class_index_round_trips() {
        for i in 0..169 {
            assert_eq!(HandClass::from_index(i).index(), i);
        }
        let total: u32 = (0..169)
            .map(|i| HandClass::from_index(i).combo_count())
            .sum();
        assert_eq!(total, 1326);
    }
}
