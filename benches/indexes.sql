-- Operator-side indexes tried with `benches/run --indexes` (the job creates no index and must
-- not need any): partial indexes that cover only the rows that can become due, so finding
-- them does not scan the whole table. Small: they hold only inactive profiles, accounts
-- pending deletion and pending requests.
\set ON_ERROR_STOP on
CREATE INDEX student_profiles_due_idx ON student_profiles (id) WHERE is_active = FALSE;
CREATE INDEX tutor_profiles_due_idx ON tutor_profiles (id) WHERE is_active = FALSE;
CREATE INDEX parent_profiles_due_idx ON parent_profiles (id) WHERE is_active = FALSE;
CREATE INDEX advertiser_profiles_due_idx ON advertiser_profiles (id) WHERE is_active = FALSE;
CREATE INDEX user_profiles_due_idx ON user_profiles (id) WHERE is_active = FALSE;
CREATE INDEX users_pending_deletion_idx ON users (id) WHERE account_status = 'pending_deletion';
CREATE INDEX account_deletion_requests_pending_idx ON account_deletion_requests (user_id)
    WHERE status = 'pending';
