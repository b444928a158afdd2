//! Serde plumbing for one pass over the document that does not stop at a
//! wrong value.
//!
//! Every value the configuration reads is a [`Checked<T>`]: it deserializes
//! from any TOML value, keeps its span, and holds either the `T` or what was
//! found instead ("an integer", "a table", ...). The sections are plain
//! `#[derive(Deserialize)]` structs of `Option<Checked<_>>` fields, so a value
//! of the wrong type becomes one `expected X, found Y` error for the checks to
//! report, and the pass goes on. Keys that no field takes are noted with
//! `serde_ignored` during the same pass ([`read_document`]).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::value::MapAccessDeserializer;
use serde::de::{
    self, Deserialize, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer,
    MapAccess, SeqAccess, Visitor,
};
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};
use toml_datetime::de::VisitMap;

/// What a value was, when it was not what its key needs: "an integer", ...
pub(super) type Found = &'static str;

/// A value of the document with its span: the `T` it converts to, or what
/// was found instead.
#[derive(Debug)]
pub(super) struct Checked<T> {
    pub span: Range<usize>,
    pub value: Result<T, Found>,
}

/// A type that a [`Checked`] value converts to. Each method receives the
/// value in one shape; the defaults refuse it (reading it to its end) and say
/// what it was.
pub(super) trait FromToml: Sized {
    fn from_scalar(scalar: TomlScalar) -> Result<Self, Found> {
        Err(scalar.kind())
    }

    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Result<Self, Found>, A::Error> {
        while seq.next_element::<Shaped<SkippedValue>>()?.is_some() {}
        Ok(Err("an array"))
    }

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Result<Self, Found>, A::Error> {
        while map.next_key::<Shaped<SkippedValue>>()?.is_some() {
            map.next_value::<Shaped<SkippedValue>>()?;
        }
        Ok(Err("a table"))
    }
}

/// A TOML value that is neither an array nor a table (nor a date-time,
/// which no key takes).
#[derive(Debug)]
pub(super) enum TomlScalar {
    String(String),
    /// Integers beyond `i128` (up to `u128::MAX`) are read as `i128::MAX`:
    /// no key takes a number anywhere near either.
    Integer(i128),
    Float(f64),
    Boolean(bool),
}

impl TomlScalar {
    pub(super) fn kind(&self) -> Found {
        match self {
            TomlScalar::String(_) => "a string",
            TomlScalar::Integer(_) => "an integer",
            TomlScalar::Float(_) => "a float",
            TomlScalar::Boolean(_) => "a boolean",
        }
    }
}

/// A table: a section of the document, read by its derived `Deserialize`
/// (the table's keys are its fields).
pub(super) trait TomlTable: DeserializeOwned {}

impl<T: TomlTable> FromToml for T {
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Result<Self, Found>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Ok)
    }
}

impl FromToml for String {
    fn from_scalar(scalar: TomlScalar) -> Result<Self, Found> {
        match scalar {
            TomlScalar::String(text) => Ok(text),
            other => Err(other.kind()),
        }
    }
}

impl FromToml for bool {
    fn from_scalar(scalar: TomlScalar) -> Result<Self, Found> {
        match scalar {
            TomlScalar::Boolean(b) => Ok(b),
            other => Err(other.kind()),
        }
    }
}

impl FromToml for i128 {
    fn from_scalar(scalar: TomlScalar) -> Result<Self, Found> {
        match scalar {
            TomlScalar::Integer(n) => Ok(n),
            other => Err(other.kind()),
        }
    }
}

/// An array, each element checked on its own (an array of tables too).
impl<T: FromToml> FromToml for Vec<Checked<T>> {
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Result<Self, Found>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Ok(items))
    }
}

/// A string, or an array of strings (`source_ip`, a NATS `url`).
#[derive(Debug)]
pub(super) enum StringOrList {
    One(String),
    List(Vec<Checked<String>>),
}

impl FromToml for StringOrList {
    fn from_scalar(scalar: TomlScalar) -> Result<Self, Found> {
        String::from_scalar(scalar).map(StringOrList::One)
    }

    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Result<Self, Found>, A::Error> {
        Ok(Vec::from_seq(seq)?.map(StringOrList::List))
    }
}

/// A value that is read to its end and refused.
struct SkippedValue;

impl FromToml for SkippedValue {}

impl<'de, T: FromToml> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Shaped<T>>::deserialize(deserializer)?;
        Ok(Checked {
            span: spanned.span(),
            value: spanned.into_inner().0,
        })
    }
}

/// A value read whatever its type: the `T`, or what it was.
struct Shaped<T>(Result<T, Found>);

impl<'de, T: FromToml> Deserialize<'de> for Shaped<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ShapeVisitor(PhantomData))
            .map(Shaped)
    }
}

struct ShapeVisitor<T>(PhantomData<T>);

impl<'de, T: FromToml> Visitor<'de> for ShapeVisitor<T> {
    type Value = Result<T, Found>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any TOML value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(T::from_scalar(TomlScalar::Boolean(b)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(T::from_scalar(TomlScalar::Integer(n.into())))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(T::from_scalar(TomlScalar::Integer(n.into())))
    }

    fn visit_i128<E>(self, n: i128) -> Result<Self::Value, E> {
        Ok(T::from_scalar(TomlScalar::Integer(n)))
    }

    fn visit_u128<E>(self, n: u128) -> Result<Self::Value, E> {
        let n = i128::try_from(n).unwrap_or(i128::MAX);
        Ok(T::from_scalar(TomlScalar::Integer(n)))
    }

    fn visit_f64<E>(self, x: f64) -> Result<Self::Value, E> {
        Ok(T::from_scalar(TomlScalar::Float(x)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(T::from_scalar(TomlScalar::String(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(T::from_scalar(TomlScalar::String(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::from_seq(seq)
    }

    /// TOML date-times arrive as maps too: the first key tells them apart.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (first, ended) = match VisitMap::next_key_seed(&mut map)? {
            Some(VisitMap::Datetime(_)) => return Ok(Err("a date-time")),
            Some(VisitMap::Key(key)) => (Some(key), false),
            None => (None, true),
        };
        T::from_map(ResumedMap {
            first,
            ended,
            rest: map,
        })
    }
}

/// A map whose first key was already read: yields that key, then the rest.
struct ResumedMap<'de, A> {
    first: Option<Cow<'de, str>>,
    /// The map had no first key.
    ended: bool,
    rest: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ResumedMap<'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if let Some(key) = self.first.take() {
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
        if self.ended {
            return Ok(None);
        }
        self.rest.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.rest.next_value_seed(seed)
    }
}

/// A key of the document that no field took.
#[derive(Debug)]
pub(super) struct IgnoredKey {
    /// Dotted key of its table, e.g. `monitor[0]`; empty for the top level.
    pub table: String,
    pub name: String,
    /// The key's own span, so that the error names the line that has it.
    pub span: Range<usize>,
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum KeySegment {
    Key(String),
    Index(usize),
}

/// Reads `T` from the whole document `root` in one pass, noting each key
/// that no field took. Fails only where the TOML deserializer itself does (an
/// integer beyond `u128`).
pub(super) fn read_document<T: DeserializeOwned>(
    root: &Spanned<DeValue<'_>>,
) -> Result<(T, Vec<IgnoredKey>), toml::de::Error> {
    let mut paths = Vec::new();
    let deserializer = ValueDeserializer::from(root.clone());
    let document = serde_ignored::deserialize(deserializer, |path| {
        let mut segments = Vec::new();
        push_segments(&path, &mut segments);
        paths.push(segments);
    })?;
    let ignored = paths
        .into_iter()
        .filter_map(|path| {
            let (KeySegment::Key(name), table) = path.split_last()? else {
                return None;
            };
            Some(IgnoredKey {
                table: dotted_path(table),
                span: key_span(root, table, name)?,
                name: name.clone(),
            })
        })
        .collect();
    Ok((document, ignored))
}

/// Reads `T` from `part` of the document (the keys of `part` that `T` does
/// not take were already noted by [`read_document`]).
pub(super) fn read_part<T: DeserializeOwned>(
    part: &Spanned<DeValue<'_>>,
) -> Result<T, toml::de::Error> {
    T::deserialize(ValueDeserializer::from(part.clone()))
}

/// The path of an ignored key, less the steps that only `Option` and
/// `Spanned` (through its private fields) add.
fn push_segments(path: &serde_ignored::Path<'_>, segments: &mut Vec<KeySegment>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            push_segments(parent, segments);
            segments.push(KeySegment::Index(*index));
        }
        Path::Map { parent, key } => {
            push_segments(parent, segments);
            if !key.starts_with("$__serde_spanned_private_") {
                segments.push(KeySegment::Key(key.clone()));
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => push_segments(parent, segments),
    }
}

/// `monitor[0].extra`, as errors name keys.
pub(super) fn dotted_path(path: &[KeySegment]) -> String {
    let mut dotted = String::new();
    for segment in path {
        match segment {
            KeySegment::Key(key) if dotted.is_empty() => dotted.push_str(key),
            KeySegment::Key(key) => {
                dotted.push('.');
                dotted.push_str(key);
            }
            KeySegment::Index(index) => dotted.push_str(&format!("[{index}]")),
        }
    }
    dotted
}

/// The value at `path` in `root`.
pub(super) fn value_at<'a, 'i>(
    root: &'a Spanned<DeValue<'i>>,
    path: &[KeySegment],
) -> Option<&'a Spanned<DeValue<'i>>> {
    path.iter()
        .try_fold(root, |value, segment| match (value.get_ref(), segment) {
            (DeValue::Table(table), KeySegment::Key(name)) => table
                .iter()
                .find(|(key, _)| key.get_ref() == name)
                .map(|(_, value)| value),
            (DeValue::Array(items), KeySegment::Index(index)) => items.get(*index),
            _ => None,
        })
}

/// The span of key `name` of the table at `table` in `root`.
fn key_span(root: &Spanned<DeValue<'_>>, table: &[KeySegment], name: &str) -> Option<Range<usize>> {
    let DeValue::Table(entries) = value_at(root, table)?.get_ref() else {
        return None;
    };
    entries
        .iter()
        .find(|(key, _)| key.get_ref() == name)
        .map(|(key, _)| key.span())
}

/// The keys a section type takes: the field names its derived `Deserialize`
/// asks for.
pub(super) fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    /// A deserializer that only notes the fields of the struct asked for.
    struct FieldNames<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for FieldNames<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the field names are read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _refused = T::deserialize(FieldNames(&mut fields));
    fields
}
