"""The engine's seed CNN (fused blocks) is the notebooks' network: same state dict, values and gradients."""
import torch

from models import seedcnn


def test_engine_and_notebook_seed_cnns_train_alike():
    torch.manual_seed(0)
    engine = seedcnn.build(7, 32, dropout=0.0).to(memory_format=torch.channels_last)
    notebook = seedcnn.build_notebook(7, 32, dropout=0.0).double()
    notebook.load_state_dict(engine.state_dict())
    assert engine.state_dict().keys() == notebook.state_dict().keys()
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (engine, notebook)]
    for step in range(3):
        x = torch.randn(8, 3, 32, 32)
        y = torch.randint(0, 7, (8,))
        losses = []
        for model, opt, inputs in ((engine, optimizers[0], x.contiguous(memory_format=torch.channels_last)),
                                   (notebook, optimizers[1], x.double())):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert abs(losses[0] - losses[1]) < 1e-5 * max(1.0, abs(losses[1])), (step, losses)
    for (name, a), b in zip(engine.state_dict().items(), notebook.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5), name
    engine.eval(), notebook.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(engine(x).double(), notebook(x.double()), rtol=1e-4, atol=1e-5)
