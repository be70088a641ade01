/** The GraphQL documents the page sends, against schema.graphql. */
const PROGRESS = `progress { phase filesDone filesTotal bytesDone bytesTotal findings updatedAt }`;

export const SCAN_ROW = `fragment ScanRow on Scan {
  id status label createdAt startedAt finishedAt errorCode
  owner { id } workspace { id name }
  ${PROGRESS}
}`;

export const VIEWER = `query Viewer { viewer { id isOperator groups workspaces { id name personal } quota { activeScans maxActiveScans remaining } } }`;

export const OPS_OVERVIEW = `query OpsOverview {
  ops {
    summary { counts { status count } oldestQueuedAgeSeconds throughput { bucketStart finished failed } }
    claimsPaused { paused reason by since }
    limits { workerHeartbeatTtlSeconds }
  }
}`;

const WORKER_FIELDS = `id name host version capacity activeScans lastHeartbeatAt secondsSinceHeartbeat stale draining`;

export const OPS_WORKERS = `query OpsWorkers { ops { workers { ${WORKER_FIELDS} } } }`;

const CLEANUP_RUN = `id status dryRun trigger triggeredBy startedAt finishedAt bytesFreed error
  counts { artifacts orphanFiles sessions uploadTemps workers }`;

export const OPS_HEALTH = `query OpsHealth {
  ops {
    diagnostics { code severity summary action subjects }
    cleanup { intervalSeconds nextScheduledAt running { ${CLEANUP_RUN} } lastRun { ${CLEANUP_RUN} } }
  }
}`;

export const OPS_SCANS = `query OpsScans($filter: OpsScanFilter) {
  ops { scans(first: 50, filter: $filter) { edges { node { ...ScanRow } } } }
}
${SCAN_ROW}`;

export const MY_SCANS = `query MyScans($status: [ScanStatus!]) {
  scans(first: 50, status: $status) { edges { node { ...ScanRow } } }
}
${SCAN_ROW}`;

export const SCAN_DETAIL = `query ScanDetail($id: ID!, $severity: [Severity!], $ruleId: String) {
  scan(id: $id) {
    ...ScanRow
    errorMessage attempts taskId queuedAt lastHeartbeatAt
    retryOf { id }
    source { fileName sizeBytes entryCount }
    findingCounts { critical high medium low info }
    events(last: 100) { edges { node { id seq kind code message createdAt } } }
    findings(first: 100, severity: $severity, ruleId: $ruleId) {
      edges { node { id severity ruleId path line column endLine message snippet } }
      pageInfo { hasNextPage }
    }
  }
}
${SCAN_ROW}`;

export const SCAN_STATE_CHANGED = `subscription ScanStateChanged($scanId: ID) {
  scanStateChanged(scanId: $scanId) { from to at event { id seq kind code message createdAt } scan { ...ScanRow } }
}
${SCAN_ROW}`;

export const SCAN_PROGRESS = `subscription ScanProgress($scanId: ID!) {
  scanProgress(scanId: $scanId) { scanId ${PROGRESS} }
}`;

export const WORKER_HEARTBEATS = `subscription WorkerHeartbeats { workerHeartbeats { kind at worker { ${WORKER_FIELDS} } } }`;

export const CLAIMS_PAUSED_CHANGED = `subscription ClaimsPausedChanged { claimsPausedChanged { paused reason by since } }`;

export const CLEANUP_RUN_UPDATED = `subscription CleanupRunUpdated { cleanupRunUpdated { ${CLEANUP_RUN} } }`;

export const PAUSE_CLAIMS = `mutation PauseClaims($reason: String!) { pauseClaims(reason: $reason) { paused reason by since } }`;
export const RESUME_CLAIMS = `mutation ResumeClaims { resumeClaims { paused reason by since } }`;
export const CANCEL_SCAN = `mutation CancelScan($id: ID!) { cancelScan(id: $id) { ...ScanRow } }
${SCAN_ROW}`;
export const RETRY_SCAN = `mutation RetryScan($id: ID!) { retryScan(id: $id) { ...ScanRow } }
${SCAN_ROW}`;
export const CANCEL_SCANS = `mutation CancelScans($filter: ScanCancelFilter!) { cancelScans(filter: $filter) { cancelled scanIds } }`;
export const TRIGGER_CLEANUP = `mutation TriggerCleanup($dryRun: Boolean!) { triggerCleanup(dryRun: $dryRun, onlyIfIdle: true) { ${CLEANUP_RUN} } }`;
export const SUBMIT_SCAN = `mutation SubmitScan($input: SubmitScanInput!) { submitScan(input: $input) { scan { ...ScanRow } } }
${SCAN_ROW}`;
