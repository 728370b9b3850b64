//! The invariant checker itself: each kind of tampering is caught, a correct deletion is not.

use crate::support::invariants::{self, Phase};
use crate::support::workload::Db;
use crate::trial::{MEDIUM, Trial};

/// The checker finds each kind of violation it claims to check (and none in a good state), so
/// "0 violations" in the trials means something.
#[test]
fn the_invariant_checker_catches_each_kind_of_violation() {
    let trial = Trial::fixed(Db::shared("fault_checker"), 41, MEDIUM);
    let mut client = trial.client();
    let one = |client: &mut postgres::Client, sql: &str| -> (String, i64, i64) {
        let row = client.query_one(sql, &[]).expect(sql);
        (row.get(0), row.get(1), row.get(2))
    };
    let (role, profile, profile_user) = one(
        &mut client,
        "SELECT role, id, user_id FROM fault_check.due_profile
         WHERE user_id NOT IN (SELECT id FROM fault_check.due_user) ORDER BY role, id LIMIT 1",
    );
    let (_, due_user, _) = one(
        &mut client,
        "SELECT '', id, 0::bigint FROM fault_check.due_user ORDER BY id LIMIT 1",
    );
    let (_, kept_user, _) = one(
        &mut client,
        "SELECT '', id, 0::bigint FROM fault_check.kept_user ORDER BY id LIMIT 1",
    );
    let (request_role, request, request_user) = one(
        &mut client,
        "SELECT role, id, user_id FROM fault_check.request_before
         WHERE due AND delete_user = FALSE
           AND user_id NOT IN (SELECT id FROM fault_check.due_user) ORDER BY id LIMIT 1",
    );
    let (kept_role, _, kept_profile_user) = one(
        &mut client,
        "SELECT k.role, k.id, k.user_id FROM fault_check.kept_profile k
         JOIN fault_check.roles_before b ON b.user_id = k.user_id AND b.role = k.role
         ORDER BY k.role, k.id LIMIT 1",
    );
    let remove_role = |user: i64, role: &str| {
        format!(
            "UPDATE users SET roles = (SELECT coalesce(json_agg(e), '[]'::json)
             FROM json_array_elements_text(roles) e WHERE e <> '{role}'),
             active_role = CASE WHEN active_role = '{role}' THEN 'user' ELSE active_role END
             WHERE id = {user};"
        )
    };
    let delete_profile_properly = format!(
        "DELETE FROM {role}_profiles WHERE id = {profile}; {}
         INSERT INTO deletion_audit_log (deletion_type, user_id, role_name)
         VALUES ('role', {profile_user}, '{role}');",
        remove_role(profile_user, &role)
    );
    let cases: Vec<(String, Phase, Option<&str>)> = vec![
        (String::new(), Phase::AfterFault, None),
        (delete_profile_properly.clone(), Phase::AfterFault, None),
        (String::new(), Phase::Final, Some("nothing due is left")),
        (
            format!("DELETE FROM {role}_profiles WHERE id = {profile}"),
            Phase::AfterFault,
            Some("exactly one role audit row"),
        ),
        (
            format!("DELETE FROM {role}_profiles WHERE id = {profile}"),
            Phase::AfterFault,
            Some("no user keeps"),
        ),
        (
            format!(
                "{delete_profile_properly} INSERT INTO deletion_audit_log \
                 (deletion_type, user_id, role_name) VALUES ('role', {profile_user}, '{role}');"
            ),
            Phase::AfterFault,
            Some("exactly one role audit row"),
        ),
        (
            format!(
                "{delete_profile_properly} UPDATE fault_check.due_profile SET restored = TRUE \
                 WHERE role = '{role}' AND id = {profile};"
            ),
            Phase::AfterFault,
            Some("or was restored, is deleted"),
        ),
        (
            format!("DELETE FROM users WHERE id = {kept_user}"),
            Phase::AfterFault,
            Some("nothing that was not due"),
        ),
        (
            format!("DELETE FROM users WHERE id = {due_user}"),
            Phase::AfterFault,
            Some("exactly one account audit row"),
        ),
        (
            format!(
                "UPDATE users SET account_status = 'active', scheduled_deletion_at = NULL \
                 WHERE id = {due_user}; UPDATE account_deletion_requests SET status = 'cancelled' \
                 WHERE user_id = {due_user};"
            ),
            Phase::AfterFault,
            Some("still there is still due (or was restored)"),
        ),
        (
            format!(
                "INSERT INTO deletion_audit_log (deletion_type, user_id) \
                 VALUES ('account', {kept_user})"
            ),
            Phase::AfterFault,
            Some("no audit row without its deletion"),
        ),
        (
            format!(
                "UPDATE account_deletion_requests SET status = 'completed' WHERE id = {request}"
            ),
            Phase::AfterFault,
            Some("no request marked completed"),
        ),
        (
            remove_role(kept_profile_user, &kept_role),
            Phase::AfterFault,
            Some("nothing half done"),
        ),
    ];
    let _ = (request_role, request_user);
    for (tamper, phase, expected) in cases {
        let mut transaction = client.transaction().expect("begin");
        transaction.batch_execute(&tamper).expect(&tamper);
        let violations = invariants::check_in(&mut transaction, phase);
        transaction.rollback().expect("rollback");
        match expected {
            None => assert!(
                violations.is_empty(),
                "{tamper:?} ({phase:?}) should be clean: {violations:#?}"
            ),
            Some(name) => assert!(
                violations.iter().any(|violation| violation.contains(name)),
                "{tamper:?} ({phase:?}): no violation of {name:?} in {violations:#?}"
            ),
        }
    }
}
