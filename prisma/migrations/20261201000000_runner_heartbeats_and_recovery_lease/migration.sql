-- AlterTable
ALTER TABLE "Scan" ADD COLUMN     "lastHeartbeatAt" TIMESTAMP(3),
ADD COLUMN     "progress" JSONB;

-- CreateTable
CREATE TABLE "RecoveryLease" (
    "name" TEXT NOT NULL,
    "workerId" TEXT NOT NULL,
    "acquiredAt" TIMESTAMP(3) NOT NULL,
    "expiresAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "RecoveryLease_pkey" PRIMARY KEY ("name")
);

