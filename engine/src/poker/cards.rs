//! Cards, hole cards and boards as text (`Ah`, `AhKh`, `Ts3s2d`) and as bit
//! masks. A card set is a `u64` with bit `16 * suit + rank`, so each suit's
//! ranks are a contiguous 13-bit field the evaluator reads without a loop.

use std::fmt;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::{Deserialize, Serialize};

/// Rank characters, deuce first: rank index 0 is a 2, 12 is an ace.
pub const RANKS: &[u8; 13] = b"23456789TJQKA";
/// Suit characters: clubs, diamonds, hearts, spades.
pub const SUITS: &[u8; 4] = b"cdhs";

/// One card, `4 * rank + suit` (0..52).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Card(u8);

impl Card {
    /// The card with this rank (0 = deuce .. 12 = ace) and suit (0..4).
    pub fn new(rank: u8, suit: u8) -> Card {
        debug_assert!(rank < 13 && suit < 4);
        Card(rank * 4 + suit)
    }

    /// The card with this index in 0..52.
    pub fn from_index(index: u8) -> Card {
        debug_assert!(index < 52);
        Card(index)
    }

    pub fn index(self) -> u8 {
        self.0
    }

    pub fn rank(self) -> u8 {
        self.0 / 4
    }

    pub fn suit(self) -> u8 {
        self.0 % 4
    }

    /// This card's bit in a [`CardSet`].
    pub fn bit(self) -> u64 {
        1u64 << (16 * u32::from(self.suit()) + u32::from(self.rank()))
    }

    /// Parse exactly two characters such as `Ah` or `td`.
    pub fn parse(text: &str) -> Option<Card> {
        let bytes = text.as_bytes();
        if bytes.len() != 2 {
            return None;
        }
        let rank = RANKS
            .iter()
            .position(|&r| r == bytes[0].to_ascii_uppercase())?;
        let suit = SUITS
            .iter()
            .position(|&s| s == bytes[1].to_ascii_lowercase())?;
        Some(Card::new(rank as u8, suit as u8))
    }

    /// All 52 cards in index order.
    pub fn all() -> impl Iterator<Item = Card> {
        (0..52).map(Card)
    }
}

impl fmt::Display for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            RANKS[self.rank() as usize] as char,
            SUITS[self.suit() as usize] as char
        )
    }
}

impl From<Card> for String {
    fn from(card: Card) -> String {
        card.to_string()
    }
}

impl TryFrom<String> for Card {
    type Error = String;
    fn try_from(text: String) -> Result<Card, String> {
        Card::parse(&text).ok_or_else(|| format!("`{text}` is not a card"))
    }
}

/// A set of cards as a bit mask (see the module docs for the layout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CardSet(pub u64);

impl CardSet {
    pub fn of(cards: &[Card]) -> CardSet {
        CardSet(cards.iter().fold(0, |mask, card| mask | card.bit()))
    }

    pub fn contains(self, card: Card) -> bool {
        self.0 & card.bit() != 0
    }

    pub fn len(self) -> u32 {
        self.0.count_ones()
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn with(self, card: Card) -> CardSet {
        CardSet(self.0 | card.bit())
    }

    /// The 13-bit rank mask of one suit.
    pub fn suit_ranks(self, suit: u8) -> u32 {
        ((self.0 >> (16 * u32::from(suit))) & 0x1fff) as u32
    }
}

/// A text parse error with the offending byte range, turned into a miette
/// diagnostic by [`ParseError::into_diagnostic`] once the caller knows what
/// the text was (an argument, a file line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub offset: usize,
    pub len: usize,
    pub hint: String,
}

impl ParseError {
    pub fn new(
        message: impl Into<String>,
        offset: usize,
        len: usize,
        hint: impl Into<String>,
    ) -> Self {
        ParseError {
            message: message.into(),
            offset,
            len: len.max(1),
            hint: hint.into(),
        }
    }

    /// Shift the span when the parsed text was a slice of a longer source.
    pub fn shifted(mut self, by: usize) -> Self {
        self.offset += by;
        self
    }

    /// A diagnostic that shows `source` (named `name`) with the bad token
    /// highlighted.
    pub fn into_diagnostic(self, name: &str, source: &str) -> TextError {
        TextError {
            message: self.message,
            src: NamedSource::new(name, source.to_string()),
            span: (self.offset, self.len).into(),
            hint: self.hint,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for ParseError {}

/// A parse error ready to print, with its source text and a label.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(poker::parse))]
pub struct TextError {
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("here")]
    pub span: SourceSpan,
    #[help]
    pub hint: String,
}

const CARD_HINT: &str =
    "a card is a rank 2-9, T, J, Q, K or A followed by a suit c, d, h or s, e.g. `Ah` or `Td`";

/// Parse a run of cards written together (`AhKh`, `Ts3s2d`), checking that
/// none repeats. Spaces and commas between cards are allowed.
pub fn parse_cards(text: &str) -> Result<Vec<Card>, ParseError> {
    let mut cards = Vec::new();
    let mut seen = CardSet::default();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b' ' || bytes[at] == b',' {
            at += 1;
            continue;
        }
        let end = (at + 2).min(bytes.len());
        let token = text.get(at..end).unwrap_or("");
        let card = Card::parse(token).ok_or_else(|| {
            ParseError::new(format!("`{token}` is not a card"), at, end - at, CARD_HINT)
        })?;
        if seen.contains(card) {
            return Err(ParseError::new(
                format!("{card} appears twice"),
                at,
                2,
                "each card of the deck can be used only once",
            ));
        }
        seen = seen.with(card);
        cards.push(card);
        at = end;
    }
    Ok(cards)
}

/// Parse exactly two hole cards.
pub fn parse_hole(text: &str) -> Result<[Card; 2], ParseError> {
    let cards = parse_cards(text)?;
    match cards.as_slice() {
        [a, b] => Ok([*a, *b]),
        _ => Err(ParseError::new(
            format!("a hand is two cards, `{text}` has {}", cards.len()),
            0,
            text.len(),
            "write hole cards together, e.g. `AhKh`",
        )),
    }
}

/// Parse a board of 0, 3, 4 or 5 cards.
pub fn parse_board(text: &str) -> Result<Vec<Card>, ParseError> {
    let cards = parse_cards(text)?;
    if matches!(cards.len(), 0 | 3 | 4 | 5) {
        Ok(cards)
    } else {
        Err(ParseError::new(
            format!(
                "a board has 0, 3, 4 or 5 cards, `{text}` has {}",
                cards.len()
            ),
            0,
            text.len(),
            "e.g. a flop `Ts3s2d`, a turn `Ts3s2dKh`",
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_card() {
        for card in Card::all() {
            assert_eq!(Card::parse(&card.to_string()), Some(card));
        }
        assert_eq!(Card::parse("ah"), Card::parse("Ah"));
    }

    #[test]
    fn reports_the_offending_token() {
        let err = parse_cards("AhKx2d").unwrap_err();
        assert_eq!((err.offset, err.len), (2, 2));
        let err = parse_cards("AhKdAh").unwrap_err();
        assert_eq!(err.offset, 4);
        assert!(err.message.contains("twice"));
        assert!(parse_board("AhKd").is_err());
        assert!(parse_hole("AhKdQs").is_err());
        assert_eq!(parse_board("Ts 3s,2d").unwrap().len(), 3);
    }

    #[test]
    fn suit_fields_are_contiguous() {
        let set = CardSet::of(&parse_cards("AsKs2c").unwrap());
        assert_eq!(set.suit_ranks(3), (1 << 12) | (1 << 11));
        assert_eq!(set.suit_ranks(0), 1);
    }
}
