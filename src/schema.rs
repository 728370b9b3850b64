//! Detects the tables the job works on and the types of their columns.
//!
//! Deployments differ (see the schema notes in README.md): `users.roles` is json, jsonb,
//! text[] or varchar[]; ids are integer or bigint; `scheduled_deletion_at` is timestamp with
//! or without time zone; `advertiser_profiles` may be absent; `account_deletion_requests` may
//! lack the per-role columns or be absent altogether. Everything is read from the catalog
//! once, before any change, so that a surprise is a clear configuration error (exit 2) and
//! not a failure halfway through a run.

use anyhow::{Context, bail};
use postgres::Client;
use postgres::types::Type;

use crate::config::RoleTable;
use crate::plan::catalog;
use crate::plan::{Plan, Policy, Roots, Treatment};
use crate::sql::TableName;

/// The type of `users.roles`, which decides how a role is removed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolesType {
    Json,
    Jsonb,
    TextArray,
    VarcharArray,
}

/// The `users` table.
#[derive(Debug)]
pub struct Users {
    pub id_type: String,
    pub has_email: bool,
    pub roles: Option<(RolesType, String)>,
    pub has_active_role: bool,
    /// `account_status` and `scheduled_deletion_at` both exist; their type if so.
    pub schedule_type: Option<String>,
}

/// One role's profile table.
#[derive(Debug)]
pub struct ProfileTable {
    pub role: String,
    pub table: TableName,
    pub id_type: String,
    /// The type of `scheduled_deletion_at`, if the table has it.
    pub schedule_type: Option<String>,
    /// Whether `scheduled_deletion_at` holds naive time in `--role-timezone` (which differs
    /// from the session's zone), rather than in the session's zone or as `timestamptz`.
    pub naive_in_role_zone: bool,
    /// What deleting one of its profiles reaches.
    pub plan: Plan,
}

/// `account_deletion_requests`.
#[derive(Debug)]
pub struct Requests {
    /// The newer columns `role`, `profile_id` and `delete_user` all exist.
    pub per_role: bool,
    pub has_completed_at: bool,
    pub schedule_type: String,
}

/// What the catalog says about every table the job touches.
#[derive(Debug)]
pub struct Schema {
    pub users: Users,
    pub profiles: Vec<ProfileTable>,
    /// Default role tables that do not exist (skipped with a warning).
    pub missing_profiles: Vec<RoleTable>,
    /// With an advertiser database: the advertiser role's table here, not used, and whether
    /// it exists (between the two phases of the split it still does).
    pub unused_advertiser: Option<(RoleTable, bool)>,
    pub requests: Option<Requests>,
    /// Whether `deletion_audit_log` exists.
    pub audit_exists: bool,
    /// Whether it has the `automated` column (created by us: yes).
    pub audit_has_automated: bool,
    /// Whether `advertiser_deletion_intents` exists.
    pub intents_exist: bool,
    /// What deleting an account reaches.
    pub accounts_plan: Plan,
}

pub const USERS: &str = "users";
pub const ADVERTISER: &str = "advertiser";
/// Where a deletion in the advertiser database is announced before it happens, and
/// forgotten once the user database has the role removed and the audit row (see
/// `purge::advertiser`).
pub const INTENTS: &str = "advertiser_deletion_intents";

/// The intents table, created by the job when it first needs it.
pub const INTENTS_DDL: &str = "CREATE TABLE IF NOT EXISTS advertiser_deletion_intents (
    profile_id bigint PRIMARY KEY,
    user_id bigint,
    created_at timestamptz NOT NULL DEFAULT now()
)";
pub const REQUESTS: &str = "account_deletion_requests";
pub const AUDIT: &str = "deletion_audit_log";

/// The audit table, exactly as the setup guide defines it.
pub const AUDIT_DDL: &str = "CREATE TABLE IF NOT EXISTS deletion_audit_log (
    id SERIAL PRIMARY KEY,
    deletion_type VARCHAR(20),
    user_id INTEGER,
    user_email VARCHAR(255),
    role_name VARCHAR(50),
    deleted_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    automated BOOLEAN DEFAULT TRUE
)";

struct Column {
    name: String,
    type_name: String,
}

struct Table {
    name: String,
    columns: Vec<Column>,
}

impl Table {
    fn column(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|column| column.name == name)
            .map(|column| column.type_name.as_str())
    }

    fn require(&self, name: &str) -> anyhow::Result<&str> {
        self.column(name)
            .with_context(|| format!("table {} has no column {name}", self.name))
    }

    fn require_type(&self, name: &str, allowed: &[&str]) -> anyhow::Result<String> {
        let type_name = self.require(name)?;
        if !allowed.contains(&type_name) {
            bail!(
                "column {}.{name} has type {type_name}; expected {}",
                self.name,
                allowed.join(" or ")
            );
        }
        Ok(type_name.to_owned())
    }
}

const ID_TYPES: [&str; 3] = ["integer", "bigint", "smallint"];
const TIMESTAMP_TYPES: [&str; 3] = [
    "timestamp without time zone",
    "timestamp with time zone",
    "date",
];

/// What the detection needs to know of the settings.
pub struct Expect<'a> {
    pub roles: &'a [RoleTable],
    /// The roles were listed explicitly: a missing profile table is an error.
    pub roles_explicit: bool,
    /// The run will write: check the privileges it needs.
    pub need_write: bool,
    /// `--role-timezone` differs from the session's zone.
    pub role_zone: bool,
    /// What to do with foreign keys that do not cascade.
    pub keys: &'a Policy,
    /// The advertiser role lives in the advertiser database: its table here is not used.
    pub advertiser_elsewhere: bool,
}

/// Reads the catalog.
pub fn detect(client: &mut Client, expect: &Expect) -> anyhow::Result<Schema> {
    let Expect {
        roles,
        roles_explicit,
        need_write,
        role_zone,
        keys: policy,
        advertiser_elsewhere,
    } = *expect;
    let users_table = load_table(client, USERS)?
        .context("table users not found (is this the Astegni database?)")?;
    let users = users_from(&users_table)?;
    let keys = catalog::read(client)?;
    let users_root = catalog::table_named(client, USERS)?.context("table users not found")?;
    let requests_oid = catalog::table_named(client, REQUESTS)?.map(|table| table.oid);
    let plan_for = |root: &catalog::Table| {
        let roots = Roots {
            root,
            users_oid: users_root.oid,
            requests_oid,
        };
        Plan::build(&keys, &roots, policy)
    };
    let accounts_plan = plan_for(&users_root)?;
    let mut profiles = Vec::new();
    let mut missing_profiles = Vec::new();
    let mut unused_advertiser = None;
    for role in roles {
        if advertiser_elsewhere && role.role == ADVERTISER {
            let exists = load_table(client, &role.table.quoted())?.is_some();
            unused_advertiser = Some((role.clone(), exists));
            continue;
        }
        match load_table(client, &role.table.quoted())? {
            Some(table) => {
                let root = catalog::table_named(client, &role.table.quoted())?
                    .with_context(|| format!("table {} not found", role.table))?;
                profiles.push(profile_from(role, &table, role_zone, plan_for(&root)?)?);
            }
            None if roles_explicit => {
                bail!(
                    "profile table {} for role {} not found",
                    role.table,
                    role.role
                )
            }
            None => missing_profiles.push(role.clone()),
        }
    }
    let requests = match load_table(client, REQUESTS)? {
        Some(table) => Some(requests_from(&table)?),
        None => None,
    };
    let (audit_exists, audit_has_automated) = match load_table(client, AUDIT)? {
        Some(table) => {
            check_audit(&table)?;
            (true, table.column("automated").is_some())
        }
        None => (false, true),
    };
    if need_write {
        check_privileges(client, &profiles, requests.is_some(), &accounts_plan)?;
    }
    Ok(Schema {
        users,
        profiles,
        missing_profiles,
        unused_advertiser,
        requests,
        audit_exists,
        audit_has_automated,
        intents_exist: load_table(client, INTENTS)?.is_some(),
        accounts_plan,
    })
}

/// Reads one table's columns, or None when there is no such table: one round trip.
fn load_table(client: &mut Client, quoted_name: &str) -> anyhow::Result<Option<Table>> {
    let display_name = quoted_name.replace('"', "");
    // One row per column; a single row with a NULL name for a table without columns, or
    // with `found` false for no table at all.
    let rows = client
        .query_typed(
            "SELECT t.oid IS NOT NULL, a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM (SELECT to_regclass($1)::oid AS oid) t
             LEFT JOIN pg_attribute a
                 ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[(&quoted_name, Type::TEXT)],
        )
        .with_context(|| format!("cannot read the columns of table {display_name}"))?;
    if !rows.first().is_some_and(|row| row.get::<_, bool>(0)) {
        return Ok(None);
    }
    let columns = rows
        .iter()
        .filter_map(|row| {
            Some(Column {
                name: row.get::<_, Option<String>>(1)?,
                type_name: row.get(2),
            })
        })
        .collect();
    Ok(Some(Table {
        name: display_name,
        columns,
    }))
}

fn users_from(table: &Table) -> anyhow::Result<Users> {
    let id_type = table.require_type("id", &ID_TYPES)?;
    let roles = match table.column("roles") {
        Some(type_name) => Some((roles_type(type_name)?, type_name.to_owned())),
        None => None,
    };
    let schedule_type = match table.column("account_status") {
        Some(_) => Some(table.require_type("scheduled_deletion_at", &TIMESTAMP_TYPES)?),
        None => None,
    };
    Ok(Users {
        id_type,
        has_email: table.column("email").is_some(),
        roles,
        has_active_role: table.column("active_role").is_some(),
        schedule_type,
    })
}

fn roles_type(type_name: &str) -> anyhow::Result<RolesType> {
    Ok(match type_name {
        "json" => RolesType::Json,
        "jsonb" => RolesType::Jsonb,
        "text[]" => RolesType::TextArray,
        name if name.starts_with("character varying") && name.ends_with("[]") => {
            RolesType::VarcharArray
        }
        other => {
            bail!("column users.roles has type {other}; expected json, jsonb, text[] or varchar[]")
        }
    })
}

fn profile_from(
    role: &RoleTable,
    table: &Table,
    role_zone: bool,
    plan: Plan,
) -> anyhow::Result<ProfileTable> {
    let id_type = table.require_type("id", &ID_TYPES)?;
    table.require_type("user_id", &ID_TYPES)?;
    table.require_type("is_active", &["boolean"])?;
    let schedule_type = match table.column("scheduled_deletion_at") {
        Some(_) => Some(table.require_type("scheduled_deletion_at", &TIMESTAMP_TYPES)?),
        None => None,
    };
    let naive_in_role_zone = role_zone
        && schedule_type
            .as_deref()
            .is_some_and(|type_name| type_name != "timestamp with time zone");
    Ok(ProfileTable {
        role: role.role.clone(),
        table: role.table.clone(),
        id_type,
        schedule_type,
        naive_in_role_zone,
        plan,
    })
}

fn requests_from(table: &Table) -> anyhow::Result<Requests> {
    table.require_type("id", &ID_TYPES)?;
    table.require_type("user_id", &ID_TYPES)?;
    table.require("status")?;
    let schedule_type = table.require_type("scheduled_deletion_at", &TIMESTAMP_TYPES)?;
    let per_role = ["role", "profile_id", "delete_user"]
        .iter()
        .all(|name| table.column(name).is_some());
    if per_role {
        table.require_type("delete_user", &["boolean"])?;
        table.require_type("profile_id", &ID_TYPES)?;
    }
    Ok(Requests {
        per_role,
        has_completed_at: table.column("completed_at").is_some(),
        schedule_type,
    })
}

fn check_audit(table: &Table) -> anyhow::Result<()> {
    for name in ["deletion_type", "user_id", "user_email", "role_name"] {
        table.require(name)?;
    }
    Ok(())
}

fn check_privileges(
    client: &mut Client,
    profiles: &[ProfileTable],
    has_requests: bool,
    accounts_plan: &Plan,
) -> anyhow::Result<()> {
    let mut needs: Vec<(String, &str)> = vec![(USERS.to_owned(), "SELECT, UPDATE, DELETE")];
    needs.extend(
        profiles
            .iter()
            .map(|profile| (profile.table.quoted(), "SELECT, UPDATE, DELETE")),
    );
    if has_requests {
        needs.push((REQUESTS.to_owned(), "SELECT, UPDATE"));
    }
    let plans = std::iter::once(accounts_plan).chain(profiles.iter().map(|p| &p.plan));
    for plan in plans {
        needs.extend(plan_privileges(plan));
    }
    require_privileges(client, &needs)
}

/// Fails, naming the first, if the database user lacks one of `needs` (table, privileges).
fn require_privileges(client: &mut Client, needs: &[(String, &str)]) -> anyhow::Result<()> {
    // has_table_privilege() with a list is true if *any* is held: ask one at a time, all in
    // one statement.
    let (tables, privileges): (Vec<&str>, Vec<&str>) = needs
        .iter()
        .flat_map(|(table, privileges)| privileges.split(", ").map(|p| (table.as_str(), p)))
        .unzip();
    let missing = client
        .query_typed(
            "SELECT n.table_name, n.privilege
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(table_name, privilege, i)
             WHERE NOT has_table_privilege(to_regclass(n.table_name), n.privilege)
             ORDER BY n.i LIMIT 1",
            &[(&tables, Type::TEXT_ARRAY), (&privileges, Type::TEXT_ARRAY)],
        )
        .context("cannot check the privileges of the database user")?;
    if let Some(row) = missing.first() {
        let (table, privilege): (&str, &str) = (row.get(0), row.get(1));
        bail!(
            "the database user lacks the {privilege} privilege on table {}",
            table.replace('"', "")
        );
    }
    Ok(())
}

/// What a plan's statements need: to read the tables on the path whose rows it looks at,
/// and to delete or update those it changes first.
fn plan_privileges(plan: &Plan) -> Vec<(String, &'static str)> {
    if plan.is_plain() {
        return Vec::new();
    }
    let mut needs: Vec<(String, &str)> = plan
        .components
        .iter()
        .flatten()
        .map(|&table| (plan.tables[table].quoted(), "SELECT"))
        .collect();
    for (_, edge) in plan.acting_edges() {
        needs.push((plan.tables[edge.child].quoted(), "SELECT"));
        if edge.treatment == Treatment::Nullify {
            needs.push((plan.tables[edge.child].quoted(), "UPDATE"));
        }
    }
    for table in plan.deleted_first() {
        needs.push((plan.tables[table].quoted(), "DELETE"));
    }
    needs.sort();
    needs.dedup();
    needs
}

/// Creates `deletion_audit_log` with the setup guide's DDL. Two runs starting at once could
/// both try, and concurrent `CREATE TABLE IF NOT EXISTS` can fail on the catalog's unique
/// index; a transaction-scoped advisory lock makes the second wait, then find the table.
pub fn create_audit_table(client: &mut Client) -> anyhow::Result<()> {
    create_table(
        client,
        (AUDIT, "audit table"),
        AUDIT_DDL,
        "create it with the DDL in the README, or run with --no-audit",
    )
}

/// Runs `ddl` (a `CREATE TABLE IF NOT EXISTS`) for table `name` under a transaction-scoped
/// advisory lock named after `what`; `hint` says what to do if it fails.
fn create_table(
    client: &mut Client,
    (name, what): (&str, &str),
    ddl: &str,
    hint: &str,
) -> anyhow::Result<()> {
    let create = |client: &mut Client| -> Result<(), postgres::Error> {
        let mut transaction = client.transaction()?;
        let key = format!("astegni-delete-expired: {what}");
        transaction.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])?;
        transaction.batch_execute(ddl)?;
        transaction.commit()
    };
    create(client).map_err(|error| {
        let message = format!(
            "cannot create table {name}: {}; {hint}",
            crate::db::db_message(&error)
        );
        // Keep the postgres::Error as the cause: a lost connection is not a config error.
        anyhow::Error::new(error).context(message)
    })
}

/// The advertiser database: its profile table, as `role` names it.
#[derive(Debug)]
pub struct AdvertiserSchema {
    pub profile: ProfileTable,
}

/// Reads the advertiser database's catalog: its profile table (whose `user_id` names a user
/// of the user database, without a foreign key) and the plan of its own foreign keys.
pub fn detect_advertiser(
    client: &mut Client,
    role: &RoleTable,
    expect: &Expect,
) -> anyhow::Result<AdvertiserSchema> {
    let table = load_table(client, &role.table.quoted())?.with_context(|| {
        format!(
            "profile table {} not found in the advertiser database",
            role.table
        )
    })?;
    let root = catalog::table_named(client, &role.table.quoted())?
        .with_context(|| format!("table {} not found", role.table))?;
    let keys = catalog::read(client)?;
    let roots = Roots {
        root: &root,
        // The advertiser database has no users table: no key leads to another user's row.
        users_oid: 0,
        requests_oid: None,
    };
    let plan = Plan::build(&keys, &roots, expect.keys)?;
    let profile = profile_from(role, &table, expect.role_zone, plan)?;
    if expect.need_write {
        let mut needs = vec![
            (profile.table.quoted(), "SELECT"),
            (profile.table.quoted(), "DELETE"),
        ];
        needs.extend(
            plan_privileges(&profile.plan)
                .iter()
                .map(|(table, privilege)| (table.clone(), *privilege)),
        );
        require_privileges(client, &needs)
            .map_err(|error| error.context("in the advertiser database"))?;
    }
    Ok(AdvertiserSchema { profile })
}

/// Creates the intents table if missing, under the same advisory lock as the audit table.
pub fn create_intents_table(client: &mut Client) -> anyhow::Result<()> {
    create_table(
        client,
        (INTENTS, "intents table"),
        INTENTS_DDL,
        "it records advertiser deletions in progress; create it with the DDL in the README",
    )
}

/// Validates the `--hold-where` expression: it must be a boolean SQL expression over
/// `users`. It is planned, not run, in a read-only transaction.
pub fn check_hold_rule(client: &mut Client, hold: &str) -> anyhow::Result<()> {
    let mut transaction = crate::db::read_only(client)?;
    transaction
        .query(
            &format!("SELECT 1 FROM users u WHERE coalesce(({hold}), FALSE) LIMIT 0"),
            &[],
        )
        .map_err(|error| {
            anyhow::anyhow!("invalid --hold-where: {}", crate::db::db_message(&error))
        })?;
    transaction.rollback().context("cannot end the check")
}
