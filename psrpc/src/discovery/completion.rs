//! When a multi call may end before its deadline.

use std::collections::HashSet;

/// The condition that ends a multi call early (see
/// [`MultiResponses::until`](crate::client::MultiResponses::until)); the call's deadline stays
/// the bound when it is never met.
///
/// Only answers of servers count (errors included), never loss reports.
///
/// ```
/// use psrpc::discovery::Completion;
///
/// assert_eq!(Completion::quorum(4), Completion::count(3));
/// assert_eq!(Completion::quorum(5), Completion::count(3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Ends once every one of these servers answered. An empty set never ends early: there
    /// may be servers (Go ones) that do not announce themselves.
    Servers(HashSet<String>),
    /// Ends once this many servers answered (0: never early).
    Count(usize),
}

impl Completion {
    /// Ends once every server in `ids` answered.
    pub fn servers<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Self {
        Completion::Servers(ids.into_iter().map(Into::into).collect())
    }

    /// Ends once `n` servers answered.
    pub fn count(n: usize) -> Self {
        Completion::Count(n)
    }

    /// Ends once a majority of `of` servers answered.
    pub fn quorum(of: usize) -> Self {
        Completion::Count(of / 2 + 1)
    }
}

/// The answers seen so far against a [`Completion`].
///
/// Kept as what is still missing, so an answer costs a set removal (or, for a count, one
/// insertion), with no allocation for a server's answer that was expected.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Servers yet to answer; `never` when the target set was empty.
    Servers {
        missing: HashSet<String>,
        never: bool,
    },
    /// Distinct servers seen and the count that ends the call (0: never).
    Count {
        seen: HashSet<String>,
        target: usize,
    },
}

impl Progress {
    pub(crate) fn new(target: Completion) -> Self {
        match target {
            Completion::Servers(ids) => Progress::Servers {
                never: ids.is_empty(),
                missing: ids,
            },
            Completion::Count(n) => Progress::Count {
                seen: HashSet::new(),
                target: n,
            },
        }
    }

    /// Records an answer of `server_id`; true once the condition is met.
    pub(crate) fn answered(&mut self, server_id: &str) -> bool {
        if server_id.is_empty() {
            return false;
        }
        match self {
            Progress::Servers { missing, never } => {
                missing.remove(server_id);
                !*never && missing.is_empty()
            }
            Progress::Count { seen, target } => {
                if !seen.contains(server_id) {
                    seen.insert(server_id.to_owned());
                }
                *target > 0 && seen.len() >= *target
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_complete_when_all_answered() {
        let mut p = Progress::new(Completion::servers(["a", "b"]));
        assert!(!p.answered("a"));
        assert!(!p.answered("a"));
        assert!(!p.answered(""));
        assert!(!p.answered("c"));
        assert!(p.answered("b"));
    }

    #[test]
    fn empty_targets_never_complete() {
        assert!(!Progress::new(Completion::servers(Vec::<String>::new())).answered("a"));
        assert!(!Progress::new(Completion::count(0)).answered("a"));
    }

    #[test]
    fn count_counts_distinct_servers() {
        let mut p = Progress::new(Completion::count(2));
        assert!(!p.answered("a"));
        assert!(!p.answered("a"));
        assert!(p.answered("b"));
    }
}
