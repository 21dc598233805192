import Foundation
import Testing
import SafeTensors
@testable import Adapters

@Suite("ListReport JSON")
struct ListReportTests {
    func json(_ r: ListReport) throws -> [String: Any] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let data = try enc.encode(r)
        let back = try JSONDecoder().decode(ListReport.self, from: data)
        #expect(back == r)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test func adapterReport() throws {
        let (tensors, metadata) = TestData.sdxlLoCon
        let r = ListReport(tensors: tensors, metadata: metadata, alphaValue: { _ in 8 }, includeModules: true)
        let j = try json(r)
        #expect(j["schema"] as? Int == 1)
        #expect(j["kind"] as? String == "adapter")
        #expect(j["tensor_count"] as? Int == 3156)
        let a = try #require(j["adapter"] as? [String: Any])
        #expect(a["kind"] as? String == "locon")
        #expect(a["scheme"] as? String == "kohya_sdxl")
        #expect(a["module_counts"] as? [String: Int] == ["unet": 788, "te1": 72, "te2": 192])
        #expect((a["base_model"] as? [String: Any])?["family"] as? String == "sdxl")
        #expect((a["ranks"] as? [[String: Int]])?.first?["value"] == 16)
        #expect((a["conv_ranks"] as? [[String: Int]])?.first?["value"] == 8)
        #expect(a["alphas_read"] as? Bool == true)
        let training = try #require(a["training"] as? [String: Any])
        #expect(training["network_dim"] as? Int == 16)
        #expect(training["base_model_version"] as? String == "sdxl_base_v1-0")
        #expect((a["modules"] as? [Any])?.count == 1052)
    }

    @Test func checkpointReport() throws {
        let (tensors, _) = TestData.sdxlCheckpoint
        let j = try json(ListReport(tensors: tensors, metadata: nil))
        #expect(j["kind"] as? String == "checkpoint")
        let c = try #require(j["checkpoint"] as? [String: Any])
        #expect(c["architecture"] as? String == "sdxl_base")
        #expect(c["architecture_name"] as? String == "SDXL base")
        let comps = (c["components"] as? [[String: Any]])?.compactMap { $0["component"] as? String }
        #expect(comps == ["unet", "te1", "te2", "vae"])
    }

    @Test func longMetadataIsSummarised() throws {
        let tags = #"{"10_char": {"1girl": 12, "smile": 3}, "5_style": {"outdoors": 2}}"#
        let md = [
            "ss_tag_frequency": tags, "ss_datasets": String(repeating: "x", count: 300), "ss_num_train_images": "40",
            "ss_epoch": "10", "ss_steps": "400",
        ]
        let r = ListReport(tensors: TestData.loraModule("lora_unet_x", out: 4, in: 4, rank: 2), metadata: md)
        #expect(r.metadata["ss_tag_frequency"] == nil)
        let s = try #require(r.metadataSummaries["ss_tag_frequency"])
        #expect(
            s.byteCount == tags.utf8.count && s.entryCount == 2 && s.nestedEntryCount == 3 && s.jsonKind == "object")
        #expect(r.metadataSummaries["ss_datasets"]?.byteCount == 300)
        #expect(r.adapter?.training.numTrainImages == 40)
        #expect(r.adapter?.training.epoch == 10 && r.adapter?.training.steps == 400)
        _ = try json(r)
    }
}
