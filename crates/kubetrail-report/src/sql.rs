//! The reports' SQL. User input only ever reaches a statement as a parameter (`$4` on);
//! what is formatted into the text is fixed SQL and the row limit, an integer.

use kubetrail_query::{Dialect, Param};

use crate::{Ctx, ObjectRef, Report, ReportError, Section, first_value, timestamp};

/// One event per request: its last stage. A request that failed authentication (or was
/// refused before it) is audited only once, at `ResponseStarted`, with an empty user.
macro_rules! one_per_request {
    () => {
        "(stage IN ('ResponseComplete', 'Panic') OR (stage = 'ResponseStarted' AND user = ''))"
    };
}
const ONE_PER_REQUEST: &str = one_per_request!();
/// One row per request, in the range and cluster.
const REQUESTS: &str = concat!(
    "time >= $1 AND time < $2 AND ($3 = '' OR cluster = $3) AND ",
    one_per_request!()
);
/// Requests whose latency is API-server work rather than the length of a session.
const TIMED: &str = "latency_us IS NOT NULL AND verb <> 'watch' AND subresource NOT IN ('exec', 'attach', 'portforward', 'proxy', 'log')";
/// The first source IP (the client as the API server saw it).
macro_rules! ip {
    () => {
        "coalesce(array_element(source_ips, 1), '')"
    };
}
const IP: &str = ip!();
const MUTATING: &str = "verb IN ('create', 'update', 'patch', 'delete', 'deletecollection')";

/// A text column of `events_view` as plain text, named `alias`.
fn plain_text(column: &str, alias: &str) -> String {
    format!("arrow_cast({column}, 'Utf8') AS {alias}")
}

fn ms(expr: &str) -> String {
    format!("round(CAST({expr} AS DOUBLE) / 1000.0, 1)")
}

impl Report {
    fn add(
        &mut self,
        ctx: &Ctx<'_>,
        name: &'static str,
        title: &str,
        sql: &str,
        extra: Vec<Param>,
    ) -> Result<usize, ReportError> {
        let batches = ctx.query(sql, extra)?;
        let section = Section {
            name,
            title: title.to_owned(),
            batches,
        };
        let rows = section.rows();
        self.sections.push(section);
        Ok(rows)
    }
}

/// A bucket width giving at most about 60 buckets over the range, rounded to a readable span.
fn bucket_micros(ctx: &Ctx<'_>) -> (i64, &'static str) {
    const SPANS: &[(i64, &str)] = &[
        (1_000_000, "1s"),
        (10_000_000, "10s"),
        (60_000_000, "1m"),
        (300_000_000, "5m"),
        (900_000_000, "15m"),
        (3_600_000_000, "1h"),
        (21_600_000_000, "6h"),
        (86_400_000_000, "1d"),
    ];
    let span = (ctx.to - ctx.from).max(1);
    SPANS
        .iter()
        .copied()
        .find(|(width, _)| span / width <= 60)
        .unwrap_or((86_400_000_000, "1d"))
}

pub(crate) fn auth_failures(ctx: &Ctx<'_>, report: &mut Report) -> Result<(), ReportError> {
    report.title = "Authentication (401) and authorization (403) failures".to_owned();
    let limit = ctx.limit;
    // The failures of the range and of the preceding period of the same length (for
    // "changed"), read once; every table below is computed from them.
    let previous_from = ctx.from - (ctx.to - ctx.from);
    ctx.keep(
        "failures",
        &format!(
            "SELECT time, user, code, {IP} AS ip, user_agent, \"cluster\", authz_reason, status_message, status_reason, resource, resource_key, path, verb \
             FROM events WHERE time >= $4 AND time < $2 AND ($3 = '' OR cluster = $3) AND {ONE_PER_REQUEST} AND code IN (401, 403)"
        ),
        vec![Param::TimestampMicros(previous_from)],
    )?;
    let failures = "failures WHERE time >= $1";
    let total = report.add(
        ctx,
        "by-code",
        "Failures by status",
        &format!(
            "SELECT code, count(*) AS requests, count(DISTINCT user) AS users, count(DISTINCT ip) AS source_ips FROM {failures} GROUP BY code ORDER BY code"
        ),
        Vec::new(),
    )?;
    if total == 0 {
        report
            .findings
            .push("no request was refused with 401 or 403 in this range".to_owned());
        return Ok(());
    }
    let (width, label) = bucket_micros(ctx);
    let bucket = kubetrail_query::DataFusionDialect.time_bucket("time", width);
    report.add(
        ctx,
        "over-time",
        &format!("Failures per {label}"),
        &format!(
            "SELECT {bucket} AS period, sum(CASE WHEN code = 401 THEN 1 ELSE 0 END) AS unauthorized_401, sum(CASE WHEN code = 403 THEN 1 ELSE 0 END) AS forbidden_403 FROM {failures} GROUP BY 1 ORDER BY 1"
        ),
        Vec::new(),
    )?;
    report.add(
        ctx,
        "by-user",
        "By user",
        &format!(
            "SELECT CASE WHEN user = '' THEN '(unauthenticated)' ELSE user END AS user, code, count(*) AS requests, array_agg(DISTINCT ip) AS source_ips, min(user_agent) AS user_agent, min(time) AS first, max(time) AS last FROM {failures} GROUP BY 1, 2 ORDER BY requests DESC, user LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    report.add(
        ctx,
        "by-source-ip",
        "By source IP",
        &format!(
            "SELECT ip AS source_ip, count(*) AS requests, sum(CASE WHEN code = 401 THEN 1 ELSE 0 END) AS unauthorized_401, sum(CASE WHEN code = 403 THEN 1 ELSE 0 END) AS forbidden_403, count(DISTINCT user) AS users, min(user) AS a_user FROM {failures} GROUP BY 1 ORDER BY requests DESC, source_ip LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    report.add(
        ctx,
        "by-user-agent",
        "By user agent",
        &format!(
            "SELECT user_agent, count(*) AS requests, count(DISTINCT user) AS users FROM {failures} GROUP BY 1 ORDER BY requests DESC, user_agent LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    report.add(
        ctx,
        "by-cluster",
        "By cluster",
        &format!(
            "SELECT \"cluster\", count(*) AS requests FROM {failures} GROUP BY 1 ORDER BY requests DESC, \"cluster\""
        ),
        Vec::new(),
    )?;
    report.add(
        ctx,
        "reasons",
        "Why (403: the authorizer's reason; 401: the status message)",
        &format!(
            "SELECT code, CASE WHEN authz_reason <> '' THEN authz_reason WHEN status_message <> '' THEN status_message ELSE status_reason END AS reason, count(*) AS requests, count(DISTINCT user) AS users, min(CASE WHEN resource = '' THEN path ELSE verb || ' ' || resource_key END) AS example FROM {failures} GROUP BY 1, 2 ORDER BY requests DESC LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    // Against the preceding period of the same length: who started failing, or fails much more.
    let rows = report.add(
        ctx,
        "changed",
        "Compared with the preceding period of the same length (new or at least 3x more failures)",
        &format!(
            "SELECT who, now AS failures, before AS failures_before, CASE WHEN before = 0 THEN 'new' ELSE CAST(round(CAST(now AS DOUBLE) / before, 1) AS VARCHAR) || 'x' END AS change FROM (\
             SELECT CASE WHEN user = '' OR user = 'system:anonymous' THEN 'source ip ' || ip ELSE user END AS who, \
             sum(CASE WHEN time >= $1 THEN 1 ELSE 0 END) AS now, sum(CASE WHEN time < $1 THEN 1 ELSE 0 END) AS before \
             FROM failures GROUP BY 1) \
             WHERE now >= 10 AND now >= 3 * before ORDER BY now DESC, who LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    if rows > 0 {
        report.findings.push(format!(
            "{rows} users or source IPs fail at least 3 times more than in the preceding period (section \"changed\")"
        ));
    }
    Ok(())
}

pub(crate) fn anonymous(ctx: &Ctx<'_>, report: &mut Report) -> Result<(), ReportError> {
    report.title = "Anonymous and unauthenticated requests".to_owned();
    let limit = ctx.limit;
    // Requests the API server let in as anonymous; a failed authentication (401, no user at
    // all) is not anonymous access and belongs to auth-failures.
    ctx.keep(
        "anonymous_requests",
        &format!(
            "SELECT time, verb, resource, resource_key, path, namespace, name, {IP} AS ip, user_agent, code, decision FROM events \
             WHERE {REQUESTS} AND (user = 'system:anonymous' OR array_has(user_groups, 'system:unauthenticated'))"
        ),
        Vec::new(),
    )?;
    let anonymous = "anonymous_requests";
    let allowed = "(decision = 'allow' OR (decision = '' AND code < 400))";
    let counts = format!(
        "count(*) AS requests, sum(CASE WHEN {allowed} THEN 1 ELSE 0 END) AS allowed, sum(CASE WHEN {allowed} THEN 0 ELSE 1 END) AS denied"
    );
    let total = report.add(
        ctx,
        "summary",
        "Allowed versus denied",
        &format!(
            "SELECT {counts}, count(DISTINCT ip) AS source_ips FROM {anonymous} HAVING count(*) > 0"
        ),
        Vec::new(),
    )?;
    if total == 0 {
        report
            .findings
            .push("no anonymous or unauthenticated request in this range".to_owned());
        return Ok(());
    }
    report.add(
        ctx,
        "by-resource",
        "By resource (or path for non-resource URLs)",
        &format!(
            "SELECT CASE WHEN resource = '' THEN path ELSE resource_key END AS resource, {counts} FROM {anonymous} GROUP BY 1 ORDER BY allowed DESC, requests DESC LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    report.add(
        ctx,
        "by-namespace",
        "By namespace",
        &format!(
            "SELECT namespace, {counts} FROM {anonymous} GROUP BY 1 ORDER BY requests DESC, namespace LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    report.add(
        ctx,
        "by-source-ip",
        "By source IP",
        &format!(
            "SELECT ip AS source_ip, {counts}, array_agg(DISTINCT user_agent) AS user_agents FROM {anonymous} GROUP BY 1 ORDER BY requests DESC, source_ip LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    let allowed_rows = report.add(
        ctx,
        "allowed-resources",
        "Allowed anonymous requests on resources (not health or discovery paths)",
        &format!(
            "SELECT time, verb, resource_key AS resource, namespace, name, ip AS source_ip, code FROM {anonymous} WHERE {allowed} AND resource <> '' ORDER BY time LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    if allowed_rows > 0 {
        report.findings.push(
            "anonymous requests were allowed on API resources: check the RBAC bindings of system:anonymous and system:unauthenticated".to_owned(),
        );
    }
    Ok(())
}

pub(crate) fn latency(ctx: &Ctx<'_>, report: &mut Report) -> Result<(), ReportError> {
    report.title =
        "API latency (long-running requests such as watches and exec left out)".to_owned();
    let limit = ctx.limit;
    let timed = format!("{REQUESTS} AND {TIMED}");
    // One scan of the store makes a cell per (verb, resource, user, client, cluster-wide or
    // not) — a few thousand even for millions of requests — with a latency histogram, and
    // every table below is computed from the cells: the four groupings roll the histograms up
    // (p50/p90/p99 within 0.5 %), the cluster-wide lists are cells too, and the merged
    // histogram says where the slowest requests start.
    // The scan reads `events_view` (text as views into the Parquet pages, half the time of
    // copying every string); the few cells are cast back to plain text.
    ctx.keep(
        "latency_cells",
        &format!(
            "SELECT {}, {}, {}, {}, cluster_wide, requests, histogram, max_us, sum_us, lists_without_limit FROM (\
             SELECT verb, resource_key, user, client, namespace = '' AND resource <> '' AS cluster_wide, \
             count(*) AS requests, kt_latency_histogram(latency_us) AS histogram, max(latency_us) AS max_us, \
             sum(latency_us) AS sum_us, sum(CASE WHEN verb = 'list' AND request_uri NOT LIKE '%limit=%' THEN 1 ELSE 0 END) AS lists_without_limit \
             FROM events_view WHERE {timed} GROUP BY 1, 2, 3, 4, 5)",
            plain_text("verb", "verb"),
            plain_text("resource_key", "resource_key"),
            plain_text("user", "user"),
            plain_text("client", "client"),
        ),
        Vec::new(),
    )?;
    ctx.keep(
        "latency_groups",
        "SELECT CASE WHEN grouping(verb) = 0 THEN 'verb' WHEN grouping(resource_key) = 0 THEN 'resource_key' \
         WHEN grouping(user) = 0 THEN 'user' ELSE 'client' END AS grouped_by, \
         coalesce(verb, resource_key, user, client) AS grouping_key, sum(requests) AS requests, \
         kt_latency_quantiles(histogram) AS quantiles, max(max_us) AS max_us FROM latency_cells \
         GROUP BY GROUPING SETS ((verb), (resource_key), (user), (client))",
        Vec::new(),
    )?;
    let columns = format!(
        "requests, {} AS p50_ms, {} AS p90_ms, {} AS p99_ms, {} AS max_ms",
        ms("array_element(quantiles, 1)"),
        ms("array_element(quantiles, 2)"),
        ms("array_element(quantiles, 3)"),
        ms("max_us")
    );
    let total = report.add(
        ctx,
        "by-verb",
        "By verb",
        &format!(
            "SELECT grouping_key AS verb, {columns} FROM latency_groups WHERE grouped_by = 'verb' ORDER BY p99_ms DESC"
        ),
        Vec::new(),
    )?;
    if total == 0 {
        report
            .findings
            .push("no timed request in this range".to_owned());
        return Ok(());
    }
    for (name, title, key) in [
        (
            "by-resource",
            "By resource (slowest p99 first)",
            "resource_key",
        ),
        ("by-user", "By user (slowest p99 first)", "user"),
        ("by-client", "By client (slowest p99 first)", "client"),
    ] {
        report.add(
            ctx,
            name,
            title,
            &format!(
                "SELECT grouping_key AS {key}, {columns} FROM latency_groups WHERE grouped_by = '{key}' ORDER BY p99_ms DESC, requests DESC LIMIT {limit}"
            ),
            Vec::new(),
        )?;
    }
    // The slowest requests are all at or above this bound, and few others are: with filter
    // pushdown the scan skips whole pages by their latency statistics and decodes the shown
    // columns only for the rows above it.
    let bound = crate::int(
        &ctx.query(
            &format!(
                "SELECT kt_latency_top_bound(kt_latency_histogram(histogram), {limit}) AS bound FROM latency_cells"
            ),
            Vec::new(),
        )?,
        "bound",
    )
    .unwrap_or(0);
    ctx.selective(|| {
        report.add(
            ctx,
            "slowest",
            "Slowest requests",
            &format!(
                "SELECT time, {} AS latency_ms, {}, {}, {}, {}, {}, {}, {IP} AS source_ip, code FROM events_view WHERE {timed} AND latency_us >= $4 ORDER BY latency_us DESC LIMIT {limit}",
                ms("latency_us"),
                plain_text("verb", "verb"),
                plain_text("resource_key", "resource"),
                plain_text("namespace", "namespace"),
                plain_text("name", "name"),
                plain_text("user", "user"),
                plain_text("client", "client"),
            ),
            vec![Param::Int(bound)],
        )
    })?;
    let expensive = report.add(
        ctx,
        "cluster-wide-lists",
        "Cluster-wide lists (expensive for the API server and etcd, worst without a limit)",
        &format!(
            "SELECT user, resource_key AS resource, sum(requests) AS requests, sum(lists_without_limit) AS without_limit, {} AS p99_ms, {} AS max_ms, {} AS total_s \
             FROM latency_cells WHERE verb = 'list' AND cluster_wide GROUP BY 1, 2 ORDER BY without_limit DESC, total_s DESC LIMIT {limit}",
            ms("array_element(kt_latency_quantiles(histogram), 3)"),
            ms("max(max_us)"),
            "round(CAST(sum(sum_us) AS DOUBLE) / 1000000.0, 1)"
        ),
        Vec::new(),
    )?;
    if expensive > 0 {
        report.findings.push(format!(
            "{expensive} user/resource pairs list cluster-wide (section \"cluster-wide-lists\")"
        ));
    }
    Ok(())
}

pub(crate) fn changes(ctx: &Ctx<'_>, report: &mut Report) -> Result<(), ReportError> {
    report.title = "Changes (successful create/update/patch/delete)".to_owned();
    let limit = ctx.limit;
    let changes = format!("{REQUESTS} AND {MUTATING} AND code < 400");
    let actor = "CASE WHEN user_kind = 'human' THEN 'human' WHEN user_kind = 'node' THEN 'node' ELSE 'controller or service account' END";
    // Most events of a busy cluster are changes (leases, status): they are counted once per
    // user, verb and resource, and the tables are computed from those counts.
    ctx.keep(
        "namespace_changes",
        &format!(
            "SELECT user, user_kind, verb, resource_key, namespace, count(*) AS changes \
             FROM events WHERE {changes} GROUP BY 1, 2, 3, 4, 5"
        ),
        Vec::new(),
    )?;
    ctx.keep(
        "change_counts",
        &format!(
            "SELECT user, {actor} AS actor, verb, resource_key AS resource, sum(changes) AS changes, array_agg(namespace ORDER BY namespace) AS namespaces \
             FROM namespace_changes GROUP BY 1, 2, 3, 4"
        ),
        Vec::new(),
    )?;
    let total = report.add(
        ctx,
        "by-actor",
        "Humans versus controllers",
        "SELECT actor, sum(changes) AS changes, count(DISTINCT user) AS users FROM change_counts GROUP BY 1 ORDER BY changes DESC",
        Vec::new(),
    )?;
    if total == 0 {
        report
            .findings
            .push("nothing was changed in this range".to_owned());
        return Ok(());
    }
    let humans = report.add(
        ctx,
        "humans",
        "Changes by humans",
        &format!(
            "SELECT time, user, verb, resource_key AS resource, namespace, name, code, {IP} AS source_ip, user_agent FROM events WHERE {changes} AND user_kind = 'human' ORDER BY time LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    if humans > 0 {
        report.findings.push(
            "people changed the cluster in this range (section \"humans\"); during a change freeze every one of these needs an explanation".to_owned(),
        );
    }
    report.add(
        ctx,
        "by-user",
        "By user and resource",
        &format!(
            "SELECT user, actor, verb, resource, changes, namespaces FROM change_counts ORDER BY CASE WHEN actor = 'human' THEN 0 ELSE 1 END, changes DESC LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    report.add(
        ctx,
        "by-resource",
        "By resource",
        &format!(
            "SELECT resource, sum(CASE WHEN verb = 'create' THEN changes ELSE 0 END) AS created, sum(CASE WHEN verb IN ('update', 'patch') THEN changes ELSE 0 END) AS modified, sum(CASE WHEN verb IN ('delete', 'deletecollection') THEN changes ELSE 0 END) AS deleted, count(DISTINCT user) AS users FROM change_counts GROUP BY 1 ORDER BY created + modified + deleted DESC LIMIT {limit}"
        ),
        Vec::new(),
    )?;
    Ok(())
}

/// The condition for one object; parameters `$4` resource, `$5` namespace, `$6` name, `$7`
/// group (`''` for any).
macro_rules! object {
    () => {
        "resource = $4 AND namespace = $5 AND name = $6 AND ($7 = '' OR api_group = $7)"
    };
}
const OBJECT: &str = object!();

/// The requests that touched one object, one row each: the latest stage of every auditID.
/// Unlike [`REQUESTS`] this also keeps long-running requests still open when the log ends —
/// an `exec` into a pod is audited at `ResponseStarted` and only completes when the session
/// does. One object's events are few, so the per-request window is cheap here; the result is
/// kept as `object_requests` for the report's tables.
const OBJECT_REQUESTS: &str = concat!(
    "SELECT time, audit_id, verb, subresource, user, client, ip, code, status_reason, latency_us FROM (",
    "SELECT time, audit_id, verb, subresource, user, client, ",
    ip!(),
    " AS ip, code, status_reason, latency_us, ",
    "row_number() OVER (PARTITION BY audit_id ORDER BY ",
    "CASE stage WHEN 'ResponseComplete' THEN 3 WHEN 'Panic' THEN 3 WHEN 'ResponseStarted' THEN 2 ELSE 1 END DESC) AS request_stage ",
    "FROM events WHERE time >= $1 AND time < $2 AND ($3 = '' OR \"cluster\" = $3) AND ",
    object!(),
    ") WHERE request_stage = 1"
);

fn object_params(object: &ObjectRef) -> Vec<Param> {
    vec![
        Param::Text(object.resource.clone()),
        Param::Text(object.namespace.clone()),
        Param::Text(object.name.clone()),
        Param::Text(object.group.clone().unwrap_or_default()),
    ]
}

pub(crate) fn object(
    ctx: &Ctx<'_>,
    object: &ObjectRef,
    report: &mut Report,
) -> Result<(), ReportError> {
    report.title = format!("Every request that touched {object}");
    let limit = ctx.limit.max(1000);
    let touched = ctx.keep("object_requests", OBJECT_REQUESTS, object_params(object))?;
    if touched == 0 {
        return Err(ReportError::ObjectNotSeen {
            object: object.to_string(),
            nearest: nearest_objects(ctx, object)?,
        });
    }
    report.add(
        ctx,
        "requests",
        "Requests, in order",
        &format!(
            "SELECT time, verb, subresource, user, client, ip AS source_ip, code, status_reason, {} AS latency_ms FROM object_requests ORDER BY time, audit_id LIMIT {limit}",
            ms("latency_us")
        ),
        Vec::new(),
    )?;
    report.add(
        ctx,
        "actions",
        "Who did what",
        "SELECT verb, subresource, user, count(*) AS requests, min(time) AS first, max(time) AS last, max(code) AS highest_code FROM object_requests GROUP BY 1, 2, 3 ORDER BY first",
        Vec::new(),
    )?;
    let story = ctx.query(
        "SELECT min(CASE WHEN verb = 'create' AND subresource = '' AND code < 400 THEN user END) AS created_by, \
             min(CASE WHEN subresource = 'eviction' AND code < 400 THEN user END) AS evicted_by, \
             min(CASE WHEN verb = 'delete' AND subresource = '' AND code < 400 THEN user END) AS deleted_by \
             FROM object_requests",
        Vec::new(),
    )?;
    for (column, verb) in [
        ("created_by", "created"),
        ("evicted_by", "evicted"),
        ("deleted_by", "deleted"),
    ] {
        if let Some(user) = text(&story, column) {
            report
                .findings
                .push(format!("{object} was {verb} by {user}"));
        }
    }
    Ok(())
}

/// Objects of the same resource whose name is closest, or the same name elsewhere.
fn nearest_objects(ctx: &Ctx<'_>, object: &ObjectRef) -> Result<Vec<String>, ReportError> {
    let batches = ctx.query(
        "SELECT resource, namespace, name, min(levenshtein(name, $6) + CASE WHEN namespace = $5 THEN 0 ELSE 2 END) AS distance FROM events \
         WHERE time >= $1 AND time < $2 AND ($3 = '' OR cluster = $3) AND resource = $4 AND name <> '' AND ($7 = '' OR api_group = $7) \
         GROUP BY 1, 2, 3 ORDER BY distance, name LIMIT 5",
        object_params(object),
    )?;
    let mut nearest = Vec::new();
    for batch in &batches {
        let columns: Vec<_> = ["resource", "namespace", "name"]
            .iter()
            .filter_map(|c| batch.column_by_name(c))
            .filter_map(|c| {
                c.as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .cloned()
            })
            .collect();
        if columns.len() != 3 {
            continue;
        }
        for row in 0..batch.num_rows() {
            let (resource, namespace, name) = (
                columns[0].value(row),
                columns[1].value(row),
                columns[2].value(row),
            );
            nearest.push(if namespace.is_empty() {
                format!("{resource}/{name}")
            } else {
                format!("{resource}/{namespace}/{name}")
            });
        }
    }
    Ok(nearest)
}

fn text(batches: &[arrow::array::RecordBatch], column: &str) -> Option<String> {
    first_value(batches, column, |a: &arrow::array::StringArray| {
        a.value(0).to_owned()
    })
}

/// A ReplicaSet of deployment `$5`: named `$5-<hash>` (`$6` is `$5-%`), the hash without `-`,
/// so `frontend-api-<hash>` does not count as a ReplicaSet of `frontend`.
const OWN_REPLICASET: &str =
    "name LIKE $6 AND strpos(substr(name, character_length($5) + 2), '-') = 0";

/// How long after a deployment change its consequences are followed.
const ROLLOUT_WINDOW_MICROS: i64 = 15 * 60 * 1_000_000;

pub(crate) fn rollout(
    ctx: &Ctx<'_>,
    target: &ObjectRef,
    report: &mut Report,
) -> Result<(), ReportError> {
    if target.resource != "deployments" || target.namespace.is_empty() {
        return Err(ReportError::Argument(format!(
            "rollout follows a deployment: deployments/NAMESPACE/NAME (got {target})"
        )));
    }
    report.title = format!("What followed the last rollout of {target}");
    // The change that starts a rollout: the deployment's spec changed by someone other than
    // the deployment controller (which only updates annotations and status).
    let triggers = format!(
        "{REQUESTS} AND {OBJECT} AND verb IN ('create', 'update', 'patch') AND subresource IN ('', 'scale') AND code < 400 AND user <> 'system:serviceaccount:kube-system:deployment-controller'"
    );
    let found = report.add(
        ctx,
        "changes",
        "Changes to the deployment",
        &format!("SELECT time, user, verb, subresource, user_agent FROM events WHERE {triggers} ORDER BY time"),
        object_params(target),
    )?;
    if found == 0 {
        report.sections.clear();
        let nearest = nearest_objects(ctx, target)?;
        return Err(ReportError::ObjectNotSeen {
            object: format!("{target} (no change to it)"),
            nearest,
        });
    }
    // Changes close together (a CI pipeline patching right after a person) are one rollout:
    // it starts at the first change within the window before the last one.
    let last = ctx.query(
        &format!("SELECT max(time) AS at FROM events WHERE {triggers}"),
        object_params(target),
    )?;
    let last = timestamp(&last, "at").unwrap_or(ctx.from);
    let mut params = object_params(target);
    params.push(Param::TimestampMicros(last - ROLLOUT_WINDOW_MICROS));
    let first = ctx.query(
        &format!("SELECT min(time) AS at FROM events WHERE {triggers} AND time >= $8"),
        params,
    )?;
    let start = timestamp(&first, "at").unwrap_or(last);
    let end = last + ROLLOUT_WINDOW_MICROS;
    let chain_params = vec![
        Param::Text(target.namespace.clone()),
        Param::Text(target.name.clone()),
        Param::Text(format!("{}-%", target.name)),
        Param::TimestampMicros(start),
        Param::TimestampMicros(end),
    ];
    // Ownership by name: a deployment's ReplicaSets are NAME-<hash>, their pods NAME-<hash>-<id>.
    let step = "CASE \
        WHEN resource = 'deployments' AND subresource = '' THEN 'deployment changed' \
        WHEN resource = 'deployments' THEN 'deployment ' || subresource || ' updated' \
        WHEN resource = 'replicasets' AND verb = 'create' THEN 'ReplicaSet created' \
        WHEN resource = 'replicasets' AND subresource = 'status' THEN 'ReplicaSet status updated' \
        WHEN resource = 'replicasets' AND verb IN ('delete', 'deletecollection') THEN 'ReplicaSet deleted' \
        WHEN resource = 'replicasets' THEN 'ReplicaSet scaled or updated' \
        WHEN resource = 'pods' AND subresource = 'binding' THEN 'pod bound to a node' \
        WHEN resource = 'pods' AND subresource = 'status' THEN 'pod status updated' \
        WHEN resource = 'pods' AND subresource = 'eviction' THEN 'pod evicted' \
        WHEN resource = 'pods' AND verb = 'create' THEN 'pod created' \
        WHEN resource = 'pods' AND verb IN ('delete', 'deletecollection') THEN 'pod deleted' \
        ELSE resource || ' ' || verb END";
    let steps = report.add(
        ctx,
        "chain",
        "The chain of actions (until 15 minutes after the last change; pods linked to the ReplicaSets acted on)",
        &format!(
            "SELECT time, {step} AS step, user, verb, resource, subresource, name, \
             CASE WHEN resource = 'pods' THEN regexp_replace(name, '-[^-]+$', '') WHEN resource = 'replicasets' THEN $5 ELSE '' END AS owner, code \
             FROM events WHERE time >= $7 AND time < $8 AND ($3 = '' OR cluster = $3) AND {ONE_PER_REQUEST} \
             AND namespace = $4 AND {MUTATING} AND ((resource = 'deployments' AND name = $5) OR (resource = 'replicasets' AND {OWN_REPLICASET}) \
             OR (resource = 'pods' AND regexp_replace(name, '-[^-]+$', '') IN (SELECT name FROM events WHERE time >= $7 AND time < $8 \
             AND ($3 = '' OR cluster = $3) AND resource = 'replicasets' AND namespace = $4 AND {OWN_REPLICASET} AND {MUTATING}))) \
             ORDER BY time, audit_id"
        ),
        chain_params,
    )?;
    report.findings.push(format!(
        "{steps} actions followed the change at {}",
        crate::format_micros(start)
    ));
    Ok(())
}

pub(crate) fn top_talkers(ctx: &Ctx<'_>, report: &mut Report) -> Result<(), ReportError> {
    report.title = "Who loads the API server".to_owned();
    let limit = ctx.limit;
    let busy = "sum(CASE WHEN verb <> 'watch' AND subresource NOT IN ('exec', 'attach', 'portforward', 'proxy', 'log') THEN latency_us ELSE 0 END)";
    // One scan: requests and API-server time per (user, client); the four tables add them up.
    ctx.keep(
        "talkers",
        &format!(
            "SELECT CASE WHEN user = '' THEN '(unauthenticated)' ELSE user END AS user, client, count(*) AS requests, coalesce({busy}, 0) AS busy_us \
             FROM events WHERE {REQUESTS} GROUP BY 1, 2"
        ),
        Vec::new(),
    )?;
    for (name, title, key, order) in [
        ("users-by-requests", "Users by requests", "user", "requests"),
        (
            "users-by-time",
            "Users by API-server time (seconds, long-running requests left out)",
            "user",
            "api_seconds",
        ),
        (
            "clients-by-requests",
            "Clients by requests",
            "client",
            "requests",
        ),
        (
            "clients-by-time",
            "Clients by API-server time (seconds)",
            "client",
            "api_seconds",
        ),
    ] {
        report.add(
            ctx,
            name,
            title,
            &format!(
                "SELECT {key}, sum(requests) AS requests, round(100.0 * sum(requests) / sum(sum(requests)) OVER (), 1) AS percent_of_requests, \
                 round(CAST(sum(busy_us) AS DOUBLE) / 1000000.0, 1) AS api_seconds FROM talkers GROUP BY 1 ORDER BY {order} DESC, {key} LIMIT {limit}"
            ),
            Vec::new(),
        )?;
    }
    Ok(())
}
