-- AlterTable
ALTER TABLE "Scan" ADD COLUMN     "retryOfId" TEXT;

-- CreateTable
CREATE TABLE "ClaimsPause" (
    "id" TEXT NOT NULL DEFAULT 'claims',
    "paused" BOOLEAN NOT NULL DEFAULT false,
    "reason" TEXT,
    "since" TIMESTAMP(3),
    "by" TEXT,
    "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ClaimsPause_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "Scan_createdAt_id_idx" ON "Scan"("createdAt", "id");

-- CreateIndex
CREATE INDEX "Scan_retryOfId_idx" ON "Scan"("retryOfId");

-- AddForeignKey
ALTER TABLE "Scan" ADD CONSTRAINT "Scan_retryOfId_fkey" FOREIGN KEY ("retryOfId") REFERENCES "Scan"("id") ON DELETE SET NULL ON UPDATE CASCADE;

