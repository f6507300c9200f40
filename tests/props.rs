//! Property tests of offset replay planning (`replay::plan`): a replay is
//! promised (`recovered`) only when it can be kept, and always when it can.

use proptest::prelude::*;
use pulsehub::replay::{self, Plan};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn recovered_iff_history_reaches_since(
        since in prop::option::of(0i64..200),
        latest in 0i64..200,
        // The first retained offset: none (all pruned or empty), or 1..=latest.
        first_back in prop::option::of(0i64..200),
    ) {
        let first = first_back.filter(|_| latest > 0).map(|b| (latest - b).max(1));
        let (plan, recovered) = replay::plan(since, latest, first);
        match since {
            None => {
                prop_assert!(!recovered);
                prop_assert_eq!(plan, Plan::Recent);
            }
            Some(s) => {
                // Replaying is possible: since is not from the future and
                // every offset after it is still retained.
                let reachable = s <= latest && (s == latest || first.is_some_and(|f| f <= s + 1));
                prop_assert_eq!(recovered, reachable, "since={} latest={} first={:?}", s, latest, first);
                if recovered {
                    prop_assert!(s <= latest);
                    prop_assert_eq!(plan, Plan::After(s));
                } else {
                    prop_assert_eq!(plan, Plan::Recent);
                }
            }
        }
    }
}
