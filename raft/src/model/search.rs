//! Name search: every file's name is indexed by its words, normalised (NFKC, lower case), as
//! `sw/{owner}/{word}/{file_id}`, so that a search reads the files whose names have a word that
//! starts with the query's, never all of a user's files. Kept in step by `State::put_file` and
//! `State::remove_file`; files stored before the index existed are indexed with the folder
//! indexes by `IndexEntries` (see `folders::index_entries`).

use unicode_normalization::UnicodeNormalization;

use super::state::keys;
use super::{File, State};
use crate::kv::KvMut;

/// The longest word indexed (longer ones are cut): keys stay short.
const MAX_WORD: usize = 64;

/// The words of a name (or a query): NFKC, lower case, split at anything but letters and
/// digits. "Quarterly Report (final).PDF" is `quarterly`, `report`, `final`, `pdf`.
pub fn words(text: &str) -> Vec<String> {
    let normal: String = text.nfkc().flat_map(char::to_lowercase).collect();
    let mut out: Vec<String> = normal
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().take(MAX_WORD).collect())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a file named `name` answers the query `q`: each of the query's words begins a word
/// of the name.
pub fn matches(name: &str, q: &[String]) -> bool {
    let have = words(name);
    q.iter()
        .all(|w| have.iter().any(|h| h.starts_with(w.as_str())))
}

pub(crate) fn index<K: KvMut>(state: &mut State<K>, f: &File) {
    for w in words(&f.name) {
        state.write_at(&keys::name_word(&f.owner, &w, &f.id), &());
    }
}

pub(crate) fn unindex<K: KvMut>(state: &mut State<K>, f: &File) {
    for w in words(&f.name) {
        state.delete_at(&keys::name_word(&f.owner, &w, &f.id));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Command, Outcome, Tier, TierLimits};
    use super::*;

    #[test]
    fn names_are_split_into_normalised_words() {
        assert_eq!(
            words("Quarterly Report (final).PDF"),
            ["final", "pdf", "quarterly", "report"]
        );
        // Compatibility forms and case fold: full-width letters, a ligature, capitals.
        assert_eq!(
            words("ＲＥＰＯＲＴ ﬁle ÉQUIPE"),
            ["file", "report", "équipe"]
        );
        assert!(matches("Équipe photo.jpg", &words("équ PHO")));
        assert!(!matches("Équipe photo.jpg", &words("quipe")));
    }

    #[test]
    fn the_index_follows_creates_renames_and_deletes_and_is_filled_for_older_files() {
        const LIMITS: TierLimits = TierLimits {
            quota: 1_000,
            max_file_size: 500,
            max_concurrent_uploads: 4,
        };
        let mut s: State = State::default();
        apply(
            &mut s,
            Command::StoreFile {
                upload_id: "u1".into(),
                file_id: "f1".into(),
                owner: "ann".into(),
                tier: Tier::Basic,
                limits: LIMITS,
                name: "Annual Report.pdf".into(),
                mime: None,
                size: 3,
                blake3: "h".into(),
                idempotency_key: None,
                object_key: "uploads/u1".into(),
                scan: false,
                now: 1,
            },
        )
        .unwrap();
        assert_eq!(s.files_by_word("ann", "rep", 10), ["f1"]);
        assert!(s.files_by_word("bob", "rep", 10).is_empty());
        apply(
            &mut s,
            Command::RenameFile {
                owner: "ann".into(),
                file_id: "f1".into(),
                name: "Budget.xls".into(),
            },
        )
        .unwrap();
        assert!(s.files_by_word("ann", "rep", 10).is_empty());
        assert_eq!(s.files_by_word("ann", "budg", 10), ["f1"]);
        // An older store without the indexes: IndexEntries fills them in, then says it is done.
        let mut old = s.clone();
        for prefix in [&b"sw/"[..], b"fn/", b"fc/"] {
            for k in old.keys_under(prefix, usize::MAX) {
                old.delete_at(&k);
            }
        }
        assert!(old.files_by_word("ann", "budg", 10).is_empty());
        let out = apply(&mut old, Command::IndexEntries { after: None }).unwrap();
        assert_eq!(out, Outcome::Indexed(None));
        assert_eq!(old.files_by_word("ann", "budg", 10), ["f1"]);
        assert!(old.entries_indexed());
        apply(
            &mut s,
            Command::DeleteFile {
                owner: "ann".into(),
                file_id: "f1".into(),
                now: 2,
            },
        )
        .unwrap();
        assert!(s.files_by_word("ann", "budg", 10).is_empty());
    }
}
