/** A file the upload path streamed to the artifact store's tmp/ before the operation ran. */
export interface StoredUpload {
  /** The value the File variable carries in place of the file. */
  placeholder: string;
  tempPath: string;
  fileName: string;
  mimeType: string;
  sizeBytes: number;
  sha256: string;
}
