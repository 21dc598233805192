import FileIO

extension SafeTensorsError {
    /// The format module's view of a FileIO error: `.systemCall`/`.noSpace` become `.io`,
    /// `.refused` stays `.refused`, `.compression` stays `.compression`, and a stream past
    /// its declared size is `.incompleteBuffer`. The message is unchanged and the original
    /// error is kept in ``cause``.
    public init(_ error: FileIOError) {
        let kind: Kind
        switch error.kind {
        case .systemCall, .noSpace: kind = .io
        case .refused: kind = .refused
        case .compression: kind = .compression
        case .exceedsDeclaredSize: kind = .incompleteBuffer
        }
        self.init(kind, file: error.path, offset: error.offset, error.detail)
        cause = error
    }
}
