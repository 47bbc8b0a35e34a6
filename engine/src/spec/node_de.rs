//! serde's view of a YAML [`Node`]: a stage's params deserialize straight
//! from the tree the checks already walk, with no `serde_json::Value` (an
//! ordered map and a copy of every string) made per stage in between. The
//! errors are serde_json's, as they were when params went through a `Value`.

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use super::yaml::{Entry, Node, NodeValue};

type Error = serde_json::Error;

/// Deserializes `T` from `node`.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, Error> {
    T::deserialize(NodeDe(node))
}

/// A node as a serde deserializer.
#[derive(Clone, Copy)]
struct NodeDe<'de>(&'de Node);

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0.value {
            NodeValue::Null => visitor.visit_unit(),
            NodeValue::Bool(b) => visitor.visit_bool(*b),
            NodeValue::Int(i) => visitor.visit_i64(*i),
            NodeValue::Float(f) => visitor.visit_f64(*f),
            NodeValue::Str(s) => visitor.visit_borrowed_str(s),
            NodeValue::Seq(items) => visitor.visit_seq(Items(items.iter())),
            NodeValue::Map(entries) => visitor.visit_map(Entries {
                entries: entries.iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.value {
            NodeValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// A unit variant is written as its name, any other as a mapping of
    /// one entry from the name to the variant's content.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.0.value {
            NodeValue::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            NodeValue::Map(entries) if entries.len() == 1 => {
                visitor.visit_enum(Variant(&entries[0]))
            }
            _ => Err(de::Error::invalid_type(
                self.unexpected(),
                &"a variant name or a map of one entry",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier
    }
}

impl NodeDe<'_> {
    fn unexpected(&self) -> de::Unexpected<'_> {
        match &self.0.value {
            NodeValue::Null => de::Unexpected::Unit,
            NodeValue::Bool(b) => de::Unexpected::Bool(*b),
            NodeValue::Int(i) => de::Unexpected::Signed(*i),
            NodeValue::Float(f) => de::Unexpected::Float(*f),
            NodeValue::Str(s) => de::Unexpected::Str(s),
            NodeValue::Seq(_) => de::Unexpected::Seq,
            NodeValue::Map(_) => de::Unexpected::Map,
        }
    }
}

struct Items<'de>(std::slice::Iter<'de, Node>);

impl<'de> de::SeqAccess<'de> for Items<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|node| seed.deserialize(NodeDe(node)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'de> {
    entries: std::slice::Iter<'de, Entry>,
    value: Option<&'de Node>,
}

impl<'de> de::MapAccess<'de> for Entries<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(&entry.value);
        seed.deserialize(BorrowedStrDeserializer::new(&entry.key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(node) => seed.deserialize(NodeDe(node)),
            None => Err(de::Error::custom("a value was asked for before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A variant written as a mapping of one entry.
struct Variant<'de>(&'de Entry);

impl<'de> de::EnumAccess<'de> for Variant<'de> {
    type Error = Error;
    type Variant = NodeDe<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'de>), Error> {
        let name = seed.deserialize(BorrowedStrDeserializer::<Error>::new(&self.0.key))?;
        Ok((name, NodeDe(&self.0.value)))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0.value {
            NodeValue::Null => Ok(()),
            _ => Err(de::Error::invalid_type(
                self.unexpected(),
                &"a unit variant",
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::spec::yaml::parse;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Method {
        Full,
        Lora { rank: u32 },
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Params {
        lr: f64,
        steps: u32,
        name: Option<String>,
        note: Option<String>,
        data: Vec<String>,
        method: Method,
        other: Method,
        #[serde(default)]
        flag: bool,
    }

    fn params(text: &str) -> Result<Params, Error> {
        from_node(&parse(text).unwrap())
    }

    /// The same values, and the same errors, as through `serde_json::Value`.
    #[test]
    fn params_read_from_the_tree_as_from_json() {
        let text =
            "lr: 3\nsteps: 8\nname: null\ndata: [a, b]\nmethod: full\nother: {lora: {rank: 4}}\n";
        let got = params(text).unwrap();
        let want = Params {
            lr: 3.0,
            steps: 8,
            name: None,
            note: None,
            data: vec!["a".into(), "b".into()],
            method: Method::Full,
            other: Method::Lora { rank: 4 },
            flag: false,
        };
        assert_eq!(got, want);
        let via_json = |text: &str| {
            let json = parse(text).unwrap().to_json();
            serde_json::from_value::<Params>(json)
                .unwrap_err()
                .to_string()
        };
        for bad in [
            "lr: 1\nsteps: -1\ndata: []\nmethod: full\nother: full\n",
            "lr: x\nsteps: 1\ndata: []\nmethod: full\nother: full\n",
            "lr: 1\nsteps: 1\ndata: [1]\nmethod: full\nother: full\n",
            "lr: 1\nsteps: 1\ndata: []\nmethod: half\nother: full\n",
            "lr: 1\nsteps: 1\ndata: []\nmethod: full\nother: full\nextra: 2\n",
            "lr: 1\ndata: []\nmethod: full\nother: full\n",
        ] {
            assert_eq!(params(bad).unwrap_err().to_string(), via_json(bad), "{bad}");
        }
    }
}
