-- CreateIndex
CREATE INDEX "Scan_sourceArtifactId_idx" ON "Scan"("sourceArtifactId");

