-- AlterTable: where a finding's secret ends, for SARIF regions (null on rows of older runners)
ALTER TABLE "Finding" ADD COLUMN     "endLine" INTEGER,
ADD COLUMN     "endColumn" INTEGER;
