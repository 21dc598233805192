import Foundation
import Testing

@Suite("graft list --modules")
struct ListModulesCLITests {
    static let locon = CLI.repoRoot.appendingPathComponent("Samples/locon-tiny.safetensors").path

    @Test("lists every adapter module with component, kind, layer, rank and alpha")
    func textAndJSON() throws {
        let text = try CLI.run(["list", Self.locon, "--modules", "--no-tensors"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("adapter modules (1052):"))
        let conv = text.stdout.split(separator: "\n").first { $0.contains("lora_unet_input_blocks_1_0_in_layers_2 ") }
        #expect(
            conv?.contains("conv3x3") == true && conv?.contains("rank 2") == true && conv?.contains("alpha 1") == true,
            "\(conv.map(String.init) ?? "no row")")

        let json = try CLI.run(["list", Self.locon, "--modules", "--json"])
        #expect(json.status == 0)
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let modules = try #require((doc["adapter"] as? [String: Any])?["modules"] as? [[String: Any]])
        #expect(modules.count == 1052)
        let te2q = try #require(
            modules.first { $0["name"] as? String == "lora_te2_text_model_encoder_layers_0_self_attn_q_proj" })
        #expect(te2q["component"] as? String == "te2" && te2q["rank"] as? Int == 4)

        // Without the flag the module list is left out.
        let plain = try CLI.run(["list", Self.locon, "--json"])
        let doc2 = try #require(try JSONSerialization.jsonObject(with: Data(plain.stdout.utf8)) as? [String: Any])
        #expect((doc2["adapter"] as? [String: Any])?["modules"] == nil)
    }
}
