#!/usr/bin/env bash
# Applies pending database migrations in an environment by running
# `vega maintenance migrate` as its vega-maintenance task on ECS, and exits with
# the task's exit code:
#
#   scripts/aws/run-migrations.sh dev [--timeout SECONDS] [--cluster NAME] [--task-definition FAMILY[:REV]]
#
# The environment name picks the task definition family vega-maintenance-<env>
# (VEGA_ECS_MAINTENANCE_TASK_DEFINITION-<env>) and the cluster vega-<env>; the
# launch type and awsvpc network come from VEGA_ECS_LAUNCH_TYPE,
# VEGA_ECS_SUBNETS and VEGA_ECS_SECURITY_GROUPS; AWS credentials and region from
# the usual AWS_PROFILE / AWS_REGION. See "Operations" in the README.
set -euo pipefail
if [ $# -lt 1 ] || [ -z "$1" ]; then
  echo "usage: $0 <env> [run-remote flags]" >&2
  exit 2
fi
cd "$(dirname "$0")/../.."
env_name="$1"
shift
exec npx vega maintenance run-remote migrate --env "$env_name" "$@"
