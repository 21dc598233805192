import DatasetTools
import Testing

@Suite("DatasetTools")
struct DatasetToolsSmokeTests {
    @Test("the module links")
    func links() { #expect(String(describing: DatasetTools.self) == "DatasetTools") }
}
